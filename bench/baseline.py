"""Raw Celery on the same broker, with the pipeline's own Celery settings (acks_late,
prefetch 1, JSON, task events) and its two-queue layout, so the ratios isolate what the
pipeline does on top of Celery.

    python -m celery -A bench.baseline worker -c 2 --loglevel WARNING

Tasks do nothing but pass their argument on; the last task of a run records the time it
finished (a Redis list), which the benchmark reads as the end of the run.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

import redis
from celery import Celery
from kombu import Queue

from config.celery import celery_config
from config.settings import get_settings

MARKS = "bench:marks:"


def _config() -> dict[str, Any]:
    settings = get_settings()
    prefix = f"{settings.queue_prefix}baseline-"
    config = celery_config(settings, settings.broker_url)
    config.update(
        task_default_queue=f"{prefix}steps",
        task_queues=(Queue(f"{prefix}steps"), Queue(f"{prefix}sends")),
        task_routes={"bench.send": {"queue": f"{prefix}sends"}},
    )
    return config


# Not the current app: in the benchmark's own process, the pipeline's tasks (shared tasks)
# must keep resolving to the pipeline's app and queues.
app = Celery("bench-baseline", set_as_current=False)
app.conf.update(_config())


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().broker_url)


def _mark(key: str | None) -> None:
    if key:
        _redis().rpush(MARKS + key, repr(time.time()))


@app.task(name="bench.noop")
def noop(mark: str | None = None) -> None:
    _mark(mark)


@app.task(name="bench.step")
def step(value: Any) -> Any:
    return value


@app.task(name="bench.send")
def send(value: Any, mark: str | None = None) -> None:
    _mark(mark)


def queues() -> list[str]:
    return [queue.name for queue in app.conf.task_queues]
