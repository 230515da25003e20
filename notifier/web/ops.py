"""GET /metrics (Prometheus) and GET /healthz.

The counters and the histogram are the ones every process adds to in Redis where outcomes
are recorded (notifier.metrics): a scrape reads them with one round trip, every web process
reports the same numbers, and deleting old rows (retention) never makes a counter go down.
The gauges are read at scrape time: deliveries waiting (deferred, batched) with one
indexed count, and the Celery queues' depth from the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from celery import Celery
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel
from sqlalchemy import func, select, text

from notifier import metrics as shared
from notifier.db import get_engine, session_scope
from notifier.models import Delivery, DeliveryStatus
from notifier.web.guards import metrics_token

log = logging.getLogger("notifier.web.ops")

BROKER_TIMEOUT = 3.0
WAITING = (DeliveryStatus.DEFERRED, DeliveryStatus.BATCHED)
"""Delivery statuses that wait for a time (quiet hours) or a digest: the waiting gauge."""

router = APIRouter(tags=["operations"])


def _split(field: str) -> tuple[str, str]:
    first, _, second = field.partition(shared.SEP)
    return first, second


class PipelineCollector(Collector):
    """The shared counters and histogram, waiting deliveries and queue depth."""

    def __init__(self, celery_app: Callable[[], Celery]):
        self.celery_app = celery_app

    def collect(self) -> Iterator[Any]:
        stored = shared.read()
        yield from self._counters(stored)
        yield from self._histograms(stored["accept_to_sent"])
        yield self._waiting()
        depth = self._queue_depth()
        if depth is not None:
            yield depth

    def _counters(self, stored: dict[str, dict[str, str]]) -> Iterator[Any]:
        events = CounterMetricFamily(
            "notifier_events", "Events received by the pipeline, by outcome.", labels=["status"]
        )
        for status, value in sorted(stored["events"].items()):
            events.add_metric([status], float(value))
        yield events
        deliveries = CounterMetricFamily(
            "notifier_deliveries",
            "Deliveries that reached a final status (sent, failed, suppressed), by channel.",
            labels=["channel", "status"],
        )
        retries = CounterMetricFamily(
            "notifier_delivery_retries",
            "Sends that failed transiently and were queued to be tried again, by channel.",
            labels=["channel"],
        )
        for field, value in sorted(stored["deliveries"].items()):
            channel, status = _split(field)
            if status == shared.RETRY:
                retries.add_metric([channel], float(value))
            else:
                deliveries.add_metric([channel, status], float(value))
        yield deliveries
        yield retries

    def _histograms(self, stored: dict[str, str]) -> Iterator[Any]:
        family = HistogramMetricFamily(
            "notifier_accept_to_sent_seconds",
            "Time from an event's accept to its delivery's send, by channel.",
            labels=["channel"],
        )
        by_channel: dict[str, dict[str, str]] = {}
        for field, value in stored.items():
            channel, part = _split(field)
            by_channel.setdefault(channel, {})[part] = value
        for channel, parts in sorted(by_channel.items()):
            buckets = [
                (str(bound), float(parts.get(str(bound), 0)))
                for bound in shared.ACCEPT_TO_SENT_BUCKETS
            ]
            buckets.append(("+Inf", float(parts.get("count", 0))))
            family.add_metric([channel], buckets, sum_value=float(parts.get("sum", 0)))
        yield family

    def _waiting(self) -> GaugeMetricFamily:
        """One count over the (status, not_before) index: no table scan."""
        family = GaugeMetricFamily(
            "notifier_deliveries_waiting",
            "Deliveries waiting for a time (deferred: quiet hours) or a digest (batched).",
            labels=["status"],
        )
        with session_scope() as session:
            counts = dict(
                session.execute(
                    select(Delivery.status, func.count())
                    .where(Delivery.status.in_(WAITING))
                    .group_by(Delivery.status)
                )
                .tuples()
                .all()
            )
        for status in WAITING:
            family.add_metric([status.value], counts.get(status, 0))
        return family

    def _queue_depth(self) -> GaugeMetricFamily | None:
        """Messages waiting in each Celery queue, when the broker is Redis (a queue is a
        list there); None when the broker is something else or does not answer."""
        app = self.celery_app()
        if not str(app.conf.broker_url or "").startswith(("redis", "rediss")):
            return None
        family = GaugeMetricFamily(
            "notifier_queue_depth", "Tasks waiting in each Celery queue.", labels=["queue"]
        )
        try:
            with app.connection_for_read() as connection:
                client = connection.default_channel.client
                for queue in app.conf.task_queues or ():
                    family.add_metric([queue.name], int(client.llen(queue.name)))
        except Exception as exc:  # the scrape still reports the database's numbers
            log.warning("queue depth unavailable", extra={"error": type(exc).__name__})
            return None
        return family


def metrics_text(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}},
        401: {"description": "NOTIFIER_METRICS_TOKEN is set and the request lacks it"},
    },
    dependencies=[Depends(metrics_token)],
)
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(metrics_text, request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class Health(BaseModel):
    database: str
    broker: str


def database_health() -> str:
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure is "unavailable"; the type goes to the log
        log.warning("database unavailable", extra={"error": type(exc).__name__})
        return "unavailable"
    return "ok"


def broker_health(app: Celery) -> str:
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT)
    except Exception as exc:  # as above: no URL (it may hold a password) in the answer
        log.warning("broker unavailable", extra={"error": type(exc).__name__})
        return "unavailable"
    return "ok"


@router.get(
    "/healthz",
    summary="Database and broker reachability",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database or the broker is down"}},
)
async def healthz(request: Request) -> JSONResponse:
    database = await run_in_threadpool(database_health)
    broker = await run_in_threadpool(broker_health, request.app.state.celery_app())
    healthy = database == broker == "ok"
    return JSONResponse(
        Health(database=database, broker=broker).model_dump(), status_code=200 if healthy else 503
    )
