"""A token bucket in Redis, shared by every worker process: per provider and per tenant.

The bucket is refilled lazily inside one Lua script, so concurrent workers never overdraw it.
"""

from __future__ import annotations

import time
from functools import lru_cache

import redis

from config.settings import get_settings

_TAKE = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate) - want
local wait = 0
if tokens < 0 then
  wait = -tokens / rate
end
redis.call('HSET', key, 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', key, math.ceil((burst - tokens) / rate) + 60)
return tostring(wait)
"""


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    """The Redis the workers share for rate limits, alarm windows and export markers."""
    settings = get_settings()
    url = settings.broker_url if settings.broker_url.startswith("redis") else ""
    if not url:
        from notifier.embedded import ensure_redis

        url = settings.rate_limit_redis_url or ensure_redis(settings.home)
    return redis.Redis.from_url(url)


def take(bucket: str, rate_per_sec: float, tokens: int = 1, burst: float | None = None) -> float:
    """Take `tokens` from the bucket; returns how many seconds the caller must wait first
    (0 when they were available). A waiting caller's tokens are reserved, not refunded."""
    if rate_per_sec <= 0:
        return 0.0
    capacity = burst if burst is not None else max(rate_per_sec, float(tokens))
    wait = redis_client().eval(
        _TAKE, 1, f"notifier:rate:{bucket}", rate_per_sec, capacity, time.time(), tokens
    )
    return float(wait)


def throttle(bucket: str, rate_per_sec: float, tokens: int = 1, max_wait: float = 5.0) -> float:
    """Block until the tokens are ours; returns the seconds slept. Waits longer than
    `max_wait` are the caller's to turn into a retry (see RateLimited)."""
    wait = take(bucket, rate_per_sec, tokens)
    if wait > max_wait:
        raise RateLimited(bucket, wait)
    if wait > 0:
        time.sleep(wait)
    return wait


class RateLimited(Exception):
    def __init__(self, bucket: str, wait: float):
        super().__init__(f"rate limit {bucket}: next slot in {wait:.1f}s")
        self.wait = wait
