"""The Redis token bucket shared by every worker."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from notifier import ratelimit


def test_bucket_allows_the_burst_then_paces() -> None:
    bucket = f"test:{uuid.uuid4().hex}"
    waits = [ratelimit.take(bucket, rate_per_sec=10) for _ in range(15)]
    assert waits[:10] == [0.0] * 10  # the burst equals one second of rate
    assert 0.05 <= waits[10] <= 0.15
    assert waits[14] > waits[10]


def test_concurrent_takers_never_overdraw() -> None:
    bucket = f"test:{uuid.uuid4().hex}"
    rate = 50.0
    granted: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            wait = ratelimit.take(bucket, rate)
            with lock:
                granted.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    # 100 tokens at 50/s with a burst of 50: the last one is reserved ~1 s out
    assert len(granted) == 100
    assert sum(1 for w in granted if w == 0.0) <= 51
    assert max(granted) == pytest.approx(1.0 + elapsed, abs=0.35)


def test_a_long_wait_becomes_rate_limited() -> None:
    bucket = f"test:{uuid.uuid4().hex}"
    for _ in range(3):
        ratelimit.take(bucket, rate_per_sec=1)
    with pytest.raises(ratelimit.RateLimited) as exc:
        ratelimit.throttle(bucket, rate_per_sec=1, max_wait=0.5)
    assert exc.value.wait > 0.5
