"""Prometheus counters and histograms shared by every process, kept in Redis.

Counted where the outcome is recorded: the accept step counts events, the outcome recorder's
status hook (notifier.status_hooks, run once the outcome is committed) counts deliveries,
the send path counts a transient failure it queues for a retry. Read by GET /metrics with
one round trip of HGETALLs: a scrape scans no table, every web process reports the same
numbers, and retention deleting old rows never lowers a counter.
A counter starts again from zero only if Redis loses its data, which Prometheus reads as a
counter reset, as it does a restarted process.

- notifier_events_total{status}: events accepted, duplicate, rejected.
- notifier_deliveries_total{channel,status}: deliveries that reached sent, failed or
  suppressed.
- notifier_delivery_retries_total{channel}: sends that failed transiently and were queued
  to be retried.
- notifier_accept_to_sent_seconds{channel}: time from the event's accept to the commit of
  the delivery's send (a digest's deliveries: of the digest's).

Counting never fails the caller: when Redis does not answer, the numbers are lost and a
warning is logged (the outcome itself is in the database).

Counts are added to a buffer in the process and written by a background thread every
FLUSH_SECONDS, in one pipelined round trip for everything counted meanwhile (a round trip
per outcome cost a busy send path more than some of its SQL statements). A scrape sees a
count within that interval; `read()` flushes its own process's buffer first, and a process
that exits normally flushes at exit (a killed one loses at most the last interval's counts).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from config.settings import get_settings
from notifier import ratelimit
from notifier.models import DeliveryStatus, utcnow
from notifier.status_hooks import StatusChange, on_delivery_status

log = logging.getLogger("notifier.metrics")

ACCEPT_TO_SENT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
RETRY = "retry"
"""The outcome of a send that failed transiently and goes back to the queue."""
SEP = "|"


def _key(name: str) -> str:
    return f"notifier:{get_settings().queue_prefix}metrics:{name}"


FLUSH_SECONDS = 0.25


class _Buffer:
    """Counts not written to Redis yet, per (hash, field); one per process (a forked child
    starts its own), written by a daemon thread every FLUSH_SECONDS."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.pending: dict[str, dict[str, float]] = {}
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, counts: dict[str, dict[str, Any]]) -> None:
        with self.lock:
            for name, fields in counts.items():
                held = self.pending.setdefault(name, {})
                for field, amount in fields.items():
                    held[field] = held.get(field, 0) + amount
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="notifier-metrics", daemon=True
                )
                self.thread.start()

    def take(self) -> dict[str, dict[str, float]]:
        with self.lock:
            pending, self.pending = self.pending, {}
        return pending

    def _run(self) -> None:
        while True:
            self.wake.wait(FLUSH_SECONDS)
            self.wake.clear()
            _write(self.take())


_buffer: _Buffer | None = None
_buffer_lock = threading.Lock()


def _current() -> _Buffer:
    global _buffer
    buffer = _buffer
    if buffer is None or buffer.pid != os.getpid():
        with _buffer_lock:
            if _buffer is None or _buffer.pid != os.getpid():
                _buffer = _Buffer()
            buffer = _buffer
    return buffer


def _write(counts: dict[str, dict[str, float]]) -> None:
    """HINCRBY/HINCRBYFLOAT every (hash, field) by its amount, in one round trip."""
    if not counts:
        return
    try:
        with ratelimit.redis_client().pipeline(transaction=False) as pipe:
            for name, fields in counts.items():
                for field, amount in fields.items():
                    if isinstance(amount, int):
                        pipe.hincrby(_key(name), field, amount)
                    else:
                        pipe.hincrbyfloat(_key(name), field, amount)
            pipe.execute()
    except Exception as exc:  # counting must never fail a send
        log.warning("metrics not counted", extra={"error": type(exc).__name__})


def _add(counts: dict[str, dict[str, Any]]) -> None:
    """Add to the process's buffer; the background thread writes it."""
    _current().add(counts)


def flush() -> None:
    """Write what this process has counted and not written yet (now, in this thread)."""
    buffer = _buffer
    if buffer is not None and buffer.pid == os.getpid():
        _write(buffer.take())


atexit.register(flush)


def count_event(status: str) -> None:
    _add({"events": {status: 1}})


def count_deliveries(channel: str, status: str, count: int = 1) -> None:
    """`count` deliveries of `channel` reached `status` (sent, failed, suppressed) or RETRY."""
    _add({"deliveries": {f"{channel}{SEP}{status}": count}})


@on_delivery_status
def count_outcomes(changes: Sequence[StatusChange]) -> None:
    """The status hook: deliveries that reached a status (sent, failed, suppressed), and for
    the sent ones the time from their event's accept to now (the commit of the send), in one
    round trip."""
    now = utcnow()
    deliveries: Counter[str] = Counter()
    histogram: dict[str, Any] = {}
    for change in changes:
        deliveries[f"{change.channel}{SEP}{change.status}"] += 1
        if change.status != DeliveryStatus.SENT or change.accepted_at is None:
            continue
        seconds = max((now - change.accepted_at).total_seconds(), 0.0)
        prefix = f"{change.channel}{SEP}"
        for bound in ACCEPT_TO_SENT_BUCKETS:
            if seconds <= bound:
                histogram[f"{prefix}{bound}"] = histogram.get(f"{prefix}{bound}", 0) + 1
        histogram[f"{prefix}count"] = histogram.get(f"{prefix}count", 0) + 1
        histogram[f"{prefix}sum"] = histogram.get(f"{prefix}sum", 0.0) + seconds
    counts: dict[str, dict[str, Any]] = {"deliveries": dict(deliveries)}
    if histogram:
        counts["accept_to_sent"] = histogram
    _add(counts)


def read() -> dict[str, dict[str, str]]:
    """Every hash, as stored (field -> decimal string); {} for one never written. What this
    process counted is written first."""
    flush()
    client = ratelimit.redis_client()
    names = ("events", "deliveries", "accept_to_sent")
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(_key(name))
        results = pipe.execute()
    return {
        name: {k.decode(): v.decode() for k, v in result.items()}
        for name, result in zip(names, results, strict=True)
    }
