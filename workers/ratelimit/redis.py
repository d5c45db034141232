"""The fleet's rate-limit store: Redis, one Lua script per primitive, time from Redis's ``TIME``.

Every worker on every host shares one log per key, and each script reads the clock inside itself,
so skew between hosts cannot let an extra request through. The log is a sorted set of request ids
scored by Redis time (ms); a pause is a key whose TTL is the wait and whose value says why.
"""

from __future__ import annotations

import redis

from workers import keys
from workers.ratelimit.backend import LogState, Pace

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: log, pause, counts. ARGV: rpm, window (ms), member id, burst limit, spread (ms), kind.
# Returns 0 when taken, else ms to wait.
_ACQUIRE = (
    _NOW
    + """
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return paused end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(tonumber(oldest[2]) + window - now, 1)
end
local burst, spread = tonumber(ARGV[4]), tonumber(ARGV[5])
local since = '(' .. (now - spread)
local recent = redis.call('ZCOUNT', KEYS[1], since, '+inf')
if recent >= burst then
  local frees = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', recent - burst, 1)
  return math.max(tonumber(frees[2]) + spread - now, 1)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
return 0
"""
)

# KEYS: log, pause. ARGV: rpm, window (ms), ahead (ms), burst limit, spread (ms).
# Returns {requests that may go by then, ms of pause left}.
_PEEK = (
    _NOW
    + """
local window, ahead, spread = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local still = redis.call('ZCOUNT', KEYS[1], '(' .. (now + ahead - window), '+inf')
local recent = redis.call('ZCOUNT', KEYS[1], '(' .. (now + ahead - spread), '+inf')
local left = math.min(tonumber(ARGV[1]) - still, tonumber(ARGV[4]) - recent)
return {math.max(left, 0), math.max(redis.call('PTTL', KEYS[2]), 0)}
"""
)

# KEYS: pause. ARGV: ms, why. Lengthens a pause, never shortens one.
_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1]) end
return 1
"""

# KEYS: log, pause. ARGV: window (ms). Returns {requests in the window, ms of pause left, why}.
_STATE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
return {redis.call('ZCARD', KEYS[1]), math.max(redis.call('PTTL', KEYS[2]), 0), redis.call('GET', KEYS[2]) or ''}
"""
)

# KEYS: lease. ARGV: token. Deletes the lease only if it is still this holder's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisBackend:
    """Shared by every process that talks to the same Redis; the scripts are registered once."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._peek = client.register_script(_PEEK)
        self._pause = client.register_script(_PAUSE)
        self._state = client.register_script(_STATE)
        self._release = client.register_script(_RELEASE)

    def acquire(self, account: str, pace: Pace, member: str, kind: str) -> int:
        waited = self._acquire(
            keys=[keys.rate_log(account), keys.rate_pause(account), keys.rate_requests(account)],
            args=[pace.rpm, pace.window_ms, member, pace.burst, pace.spread_ms, kind],
        )
        return int(waited)

    def peek(self, account: str, pace: Pace, ahead_ms: int) -> tuple[int, int]:
        left, paused = self._peek(
            keys=[keys.rate_log(account), keys.rate_pause(account)],
            args=[pace.rpm, pace.window_ms, ahead_ms, pace.burst, pace.spread_ms],
        )
        return int(left), int(paused)

    def pause(self, account: str, ms: int, why: str) -> None:
        self._pause(keys=[keys.rate_pause(account)], args=[ms, why])

    def state(self, account: str, window_ms: int) -> LogState:
        used, paused_ms, why = self._state(keys=[keys.rate_log(account), keys.rate_pause(account)], args=[window_ms])
        return LogState(int(used), int(paused_ms), why.decode() if isinstance(why, bytes) else str(why))

    def counts(self, account: str) -> dict[str, int]:
        raw: dict[bytes, bytes] = self.client.hgetall(keys.rate_requests(account))  # type: ignore[assignment]
        return {kind.decode(): int(count) for kind, count in raw.items()}

    def hold(self, name: str, token: str, ms: int) -> bool:
        return bool(self.client.set(name, token, nx=True, px=ms))

    def release(self, name: str, token: str) -> None:
        self._release(keys=[name], args=[token])
