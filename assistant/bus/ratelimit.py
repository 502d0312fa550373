"""Token buckets in Redis: a rate and a burst per key, shared by every gateway.

One Lua script refills and takes in one step, with Redis's own clock, so gateways on machines
with skewed clocks share a bucket correctly. A bucket key expires once it would be full again.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from assistant.bus.keys import DEFAULT_KEYS, Keys

_TAKE = """
-- KEYS[1] bucket; ARGV[1] rate per second, ARGV[2] burst, ARGV[3] cost.
-- Returns 0 when taken, else the milliseconds until the cost is available.
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return wait
"""


@dataclass(frozen=True)
class Bucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a bucket needs a positive rate and a burst of at least 1")


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, *, keys: Keys = DEFAULT_KEYS) -> None:
        self.redis = redis
        self.keys = keys
        self._take = redis.register_script(_TAKE)

    async def take(self, scope: str, ident: str, bucket: Bucket, cost: float = 1) -> float:
        """Take ``cost`` tokens; return 0.0, or the seconds to wait when there are too few."""
        wait_ms = await self._take(
            keys=[self.keys.rate_limit(scope, ident)], args=[bucket.rate, bucket.burst, cost]
        )
        return int(wait_ms) / 1000
