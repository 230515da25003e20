"""Hooks run after a delivery's status changed: the one place to react to outcomes.

The outcome recorder (notifier.outcomes, for sends and digests alike) calls
`delivery_status_changed` with every change it has just committed: never inside the
recording transaction, so a hook that talks to the network (a webhook, an alarm) cannot
hold a lock or be rolled back with it, and a change a hook sees is in the database.

Register a hook once, at import time of the module that needs it::

    from notifier.status_hooks import StatusChange, on_delivery_status

    @on_delivery_status
    def count(changes: Sequence[StatusChange]) -> None:
        ...

A hook gets the changes of one commit (a multicast's 500 rows come as one call). It must be
quick or hand the work to a task; an exception it raises is logged and never fails the send
nor stops the other hooks (the outcome is already recorded).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("notifier.status_hooks")


@dataclass(frozen=True)
class StatusChange:
    """One delivery's new status, as recorded. `reason` is set where it is not `sent`;
    `digest_id` when the delivery went out (or failed) as part of a digest; `accepted_at`
    when its event was accepted."""

    delivery_id: int
    tenant_id: str
    event_id: str
    recipient: str
    channel: str
    status: str
    reason: str | None = None
    provider_message_id: str | None = None
    digest_id: int | None = None
    accepted_at: dt.datetime | None = None


StatusHook = Callable[[Sequence[StatusChange]], None]
_HOOKS: list[StatusHook] = []


def on_delivery_status(hook: StatusHook) -> StatusHook:
    """Register `hook` (usable as a decorator); registering the same hook twice runs it once."""
    if hook not in _HOOKS:
        _HOOKS.append(hook)
    return hook


def remove_delivery_status_hook(hook: StatusHook) -> None:
    """Unregister `hook` (tests, or a feature switched off at run time)."""
    if hook in _HOOKS:
        _HOOKS.remove(hook)


def delivery_status_changed(changes: Sequence[StatusChange]) -> None:
    """Run every hook on changes that are committed. Called by the outcome recorder only."""
    if not changes:
        return
    for hook in list(_HOOKS):
        try:
            hook(changes)
        except Exception:
            log.exception(
                "a delivery status hook failed", extra={"hook": getattr(hook, "__name__", "?")}
            )
