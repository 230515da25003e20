"""GET /metrics (Prometheus) and GET /healthz.

The metrics are computed from the database at scrape time, in a registry of their own, so
every web process reports the same numbers and nothing is lost when one restarts.
"""

from __future__ import annotations

import datetime as dt
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
from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from notifier.db import get_engine, session_scope
from notifier.models import Delivery, DeliveryStatus, Event, utcnow
from notifier.web.guards import metrics_token

log = logging.getLogger("notifier.web.ops")

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
LATENCY_WINDOW = dt.timedelta(hours=1)
BROKER_TIMEOUT = 3.0

router = APIRouter(tags=["operations"])


def _latency_seconds(session: Session) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", Delivery.sent_at - Delivery.created_at)
    return (func.julianday(Delivery.sent_at) - func.julianday(Delivery.created_at)) * 86400.0


class DatabaseCollector(Collector):
    """Events, deliveries, send latency, retries and queue depth, read at scrape time."""

    def __init__(self, celery_app: Callable[[], Celery], now: Callable[[], dt.datetime] = utcnow):
        self.celery_app = celery_app
        self.now = now

    def collect(self) -> Iterator[Any]:
        with session_scope() as session:
            yield from self._events(session)
            yield from self._deliveries(session)
            yield self._latency(session)
        depth = self._queue_depth()
        if depth is not None:
            yield depth

    def _events(self, session: Session) -> Iterator[Any]:
        family = CounterMetricFamily(
            "notifier_events", "Events received by the pipeline, by outcome.", labels=["status"]
        )
        rows = session.execute(select(Event.status, func.count()).group_by(Event.status))
        for status, count in rows:
            family.add_metric([status], count)
        yield family

    def _deliveries(self, session: Session) -> Iterator[Any]:
        family = GaugeMetricFamily(
            "notifier_deliveries",
            "Deliveries by channel and current status.",
            labels=["channel", "status"],
        )
        rows = session.execute(
            select(Delivery.channel, Delivery.status, func.count()).group_by(
                Delivery.channel, Delivery.status
            )
        )
        for channel, status, count in rows:
            family.add_metric([channel, status], count)
        yield family
        retries = CounterMetricFamily(
            "notifier_delivery_retries",
            "Send attempts beyond the first (sum of attempts - 1), by channel.",
            labels=["channel"],
        )
        extra_attempts = session.execute(
            select(Delivery.channel, func.sum(Delivery.attempts - 1))
            .where(Delivery.attempts > 1)
            .group_by(Delivery.channel)
        )
        for channel, total in extra_attempts:
            retries.add_metric([channel], int(total or 0))
        yield retries

    def _latency(self, session: Session) -> HistogramMetricFamily:
        latency = _latency_seconds(session)
        columns = [func.sum(case((latency <= bound, 1), else_=0)) for bound in LATENCY_BUCKETS]
        row = session.execute(
            select(func.count(), func.sum(latency), *columns).where(
                Delivery.status == DeliveryStatus.SENT,
                Delivery.sent_at >= self.now() - LATENCY_WINDOW,
            )
        ).one()
        total, seconds, *cumulative = row
        buckets = [(str(b), int(c or 0)) for b, c in zip(LATENCY_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", int(total or 0)))
        return HistogramMetricFamily(
            "notifier_send_latency_seconds",
            "Time from a delivery's creation to its send, for deliveries sent in the last hour.",
            buckets=buckets,
            sum_value=float(seconds or 0.0),
        )

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
