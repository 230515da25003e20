"""The event's canvas: notify (accept) -> resolve_recipients -> select_channels, one per
page of recipients, as a group -> send_<channel>, one per chunk of delivery ids, as a group.

Every task of one event carries the root id of the first (notify, or resolve_recipients
for publish() and the other entry points): Flower shows one event as one tree. The groups
are sent by the step that knows them (the pages once the audience is counted, the channels
once they are chosen). A group is not put in place of a step with Task.replace: Celery
turns a replacing group into a chord, whose counter needs every send task's result in the
result backend; the steps keep no results (task_ignore_result)."""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any

from celery import Task, group, shared_task
from celery.result import AsyncResult
from kombu.exceptions import OperationalError as BrokerUnreachable

from notifier.pipeline import Audience, Page, accept, plan_page, resolve
from tasks import enqueue
from tasks.send import DB_RETRY

# How the caller's process retries subscribing to a result before it publishes: about 1.5 s
# of retries instead of the Redis backend's 20 retries a second apart, so notify.delay() on
# an unreachable Redis raises within a few seconds. The workers' result writes keep the
# backend's own, longer policy.
CALLER_RESULT_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.5}


class NotifyTask(Task):
    """notify.delay() on a broker that is down raises kombu's OperationalError, as any
    publish does, within a few seconds. (Celery's Redis result backend subscribes to the
    result before it publishes; when Redis is down at a process's first call it retried for
    about 20 s, then raised a RuntimeError saying the application "must be restarted",
    which is neither clear nor true.)"""

    def apply_async(self, *args: Any, **kwargs: Any) -> AsyncResult:
        _retry_result_subscription_briefly(self.backend)
        task_args = args[0] if args else kwargs.get("args")
        # Logs and task events (Flower) show a task's arguments: for an event, only what
        # identifies it, never its data (names, emails, message text).
        kwargs.setdefault("argsrepr", event_summary(task_args))
        kwargs.setdefault("kwargsrepr", "{}")
        try:
            return super().apply_async(*args, **kwargs)
        except RuntimeError as exc:
            lost = getattr(self.backend, "connection_errors", ())
            if lost and isinstance(exc.__cause__, lost):
                reason = f"the result store is unreachable: {exc.__cause__}"
                raise BrokerUnreachable(reason) from exc
            raise


def _retry_result_subscription_briefly(backend: Any) -> None:
    """Give the backend's result consumer (the caller side only: workers store results
    through the backend itself) the short CALLER_RESULT_RETRY policy."""
    consumer = getattr(backend, "result_consumer", None)
    ensure = getattr(backend, "ensure", None)
    if consumer is None or ensure is None or getattr(consumer, "_notifier_brief", False):
        return
    # ResultConsumer retries every reconnect through its `_ensure` (the backend's ensure).
    consumer._ensure = functools.partial(ensure, **CALLER_RESULT_RETRY)
    consumer._notifier_brief = True


def event_summary(task_args: Any) -> str:
    """repr of notify's arguments with the event cut down to its identifying fields."""
    event = task_args[0] if isinstance(task_args, list | tuple) and task_args else None
    if not isinstance(event, dict):
        return "(<event>,)"
    keys = ("eventId", "eventType", "tenantId")
    return repr(({key: str(event.get(key))[:200] for key in keys if key in event},))


@shared_task(
    name="notifier.notify",
    base=NotifyTask,
    bind=True,
    acks_late=True,
    ignore_result=False,
    **DB_RETRY,
)
def notify(self: Task, event: Any) -> dict[str, Any]:
    """Accept one event (validated here, in the worker) and start its deliveries."""
    accepted = accept(event)
    if accepted.event_pk is not None:
        enqueue.start_event(accepted.event_pk, event_id=accepted.event_id)
    return accepted.as_result()


@shared_task(name="notifier.resolve_recipients", bind=True, acks_late=True, **DB_RETRY)
def resolve_recipients(self: Task, event_pk: int) -> int:
    """Split the event's audience into keyset pages and plan them as a group of
    `notifier.select_channels` tasks, one per page: every pool process of every worker
    plans one broadcast together. Returns the number of pages."""
    resolution = resolve(event_pk)
    if resolution is None:
        return 0
    audience = asdict(resolution.audience)
    enqueue.fan_out(
        group(
            select_channels.si(event_pk, audience, page.first, page.before)
            for page in resolution.pages
        ),
        "pages",
        event_pk=event_pk,
    )
    return len(resolution.pages)


@shared_task(name="notifier.select_channels", bind=True, acks_late=True, **DB_RETRY)
def select_channels(
    self: Task, event_pk: int, audience: dict[str, Any], first: str, before: str | None
) -> dict[str, int]:
    """Choose the channels of one page of recipients, insert its deliveries and send them
    as a group of per-channel send tasks (`notifier.send_<channel>`), each carrying a
    chunk of delivery ids. A person's waiting digest goes out before an urgent event."""
    planned = plan_page(event_pk, Audience(**audience), Page(first, before))
    enqueue.send_digests(planned.digests)
    enqueue.send_deliveries(planned.chunks)
    return planned.counts
