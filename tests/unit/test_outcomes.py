"""outcomes.judge: what a provider call's result means for its rows, the same for a send
and a digest."""

from __future__ import annotations

from channels.base import DeliveryResult, PermanentChannelError, TransientChannelError
from config.settings import get_settings
from notifier.outcomes import Verdict, judge


def test_a_result_is_sent() -> None:
    assert judge(DeliveryResult("m-1"), final_attempt=True, attempts=99) == Verdict("sent")


def test_a_transient_error_is_retried_inside_the_budget_only() -> None:
    busy = TransientChannelError("503", retry_after=7.0, status_code=503)
    retry = judge(busy, final_attempt=False, attempts=1)
    assert retry.retry and retry.retry_after == 7.0
    assert retry.reason == "TransientChannelError (status 503): 503"
    # The task's last try, or the row's own attempts spent (a task dispatched again by the
    # stalled-work sweep starts its retry count afresh; the row does not).
    spent = get_settings().send_max_retries + 1
    for final, attempts in ((True, 1), (False, spent)):
        verdict = judge(busy, final_attempt=final, attempts=attempts)
        assert not verdict.retry and verdict.status == "failed"
        assert verdict.reason == "retries exhausted: TransientChannelError (status 503): 503"


def test_a_permanent_error_fails_or_suppresses_at_once() -> None:
    assert judge(PermanentChannelError("bad"), False, 1).status == "failed"
    assert judge(PermanentChannelError("gone", suppress=True), False, 1).status == "suppressed"
    revoked = judge(PermanentChannelError("401", disable_channel=True), False, 1)
    assert revoked == Verdict("failed", "PermanentChannelError: 401")
