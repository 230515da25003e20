from __future__ import annotations

from tasks.send import retry_countdown


def test_backoff_grows_and_is_capped() -> None:
    # full jitter: each countdown lies in [1, min(cap, 2 * 2**retries)]
    for retries in range(8):
        values = [retry_countdown(retries, None) for _ in range(50)]
        ceiling = min(2.0, 2 * 2**retries)  # NOTIFIER_SEND_BACKOFF_MAX=2 in the test session
        assert all(1.0 <= v <= max(1.0, ceiling) for v in values)


def test_retry_after_is_a_floor() -> None:
    assert all(retry_countdown(0, 7.0) >= 7.0 for _ in range(20))
    assert retry_countdown(5, 600.0) == 600.0
