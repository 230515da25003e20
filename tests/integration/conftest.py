from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from notifier.db import session_scope
from notifier.models import Delivery, DeliveryStatus
from tests.helpers import wait_for

SETTLED = {
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.SUPPRESSED,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.DEFERRED,
    DeliveryStatus.BATCHED,
}


def deliveries(**filters: Any) -> list[Delivery]:
    with session_scope() as session:
        query = select(Delivery).order_by(Delivery.id)
        for name, value in filters.items():
            query = query.where(getattr(Delivery, name) == value)
        return list(session.scalars(query))


def wait_settled(expected: int | None = None, timeout: float = 60.0) -> list[Delivery]:
    def probe() -> list[Delivery] | None:
        rows = deliveries()
        if not rows or (expected is not None and len(rows) < expected):
            return None
        return rows if all(r.status in SETTLED for r in rows) else None

    return wait_for(probe, timeout)


def count(model: Any) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Route one channel at a time to the scripted boundary fake: scripted.use('email')."""
    from channels import registry
    from config.settings import get_settings
    from tests.fakes import ScriptedChannel

    backends = get_settings().backends
    saved = dict(backends)

    class Control:
        channel = ScriptedChannel

        def use(self, *channels: str) -> None:
            for name in channels:
                monkeypatch.setitem(registry.declared(name).backends, "scripted", ScriptedChannel)
                backends[name] = "scripted"
            registry.reset_channels()

    ScriptedChannel.reset()
    yield Control()
    backends.clear()
    backends.update(saved)
    registry.reset_channels()
