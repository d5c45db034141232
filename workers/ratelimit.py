"""One rate limit per provider key for the whole deployment, kept in Redis.

A sliding log: every request's time is kept for a minute, so no 60-second window ever holds more than
``rpm`` (a fixed window lets twice that through at its edge). Time comes from Redis (``TIME`` in the
script), never from a worker's clock, so skew between hosts cannot let an extra request through. Each
operation is one Lua script, atomic across every process and host.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import redis

from workers import keys

WINDOW_MS = 60_000

# KEYS: log, pause. ARGV: rpm, window (ms), member id. Returns 0 when taken, else ms to wait.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return paused end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(tonumber(oldest[2]) + window - now, 1)
"""

# KEYS: log, pause. ARGV: rpm, window (ms), ahead (ms). Returns {requests left by then, ms of pause left}.
_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local still = redis.call('ZCOUNT', KEYS[1], '(' .. (now + tonumber(ARGV[3]) - window), '+inf')
return {math.max(tonumber(ARGV[1]) - still, 0), math.max(redis.call('PTTL', KEYS[2]), 0)}
"""

# KEYS: pause. ARGV: ms, why (JSON). Lengthens a pause, never shortens one.
_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1]) end
return 1
"""

# KEYS: log, pause. ARGV: window (ms). Returns {requests in the window, ms of pause left, why}.
_STANDING = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
return {redis.call('ZCARD', KEYS[1]), math.max(redis.call('PTTL', KEYS[2]), 0), redis.call('GET', KEYS[2]) or ''}
"""


@dataclass(frozen=True)
class Standing:
    """Where an account stands with its limit now: for ``genq status`` and for admission."""

    used: int
    """Requests in the last 60 seconds."""
    paused_for: float
    """Seconds until the account may send again; 0 when it is not paused."""
    reason: str = ""
    out_of_rotation: bool = False
    """Paused for its key or its balance, not its rate: its queued jobs go back for other accounts."""


class RateLimiter:
    def __init__(self, client: redis.Redis, *, margin: float = 0.0) -> None:
        """``margin``: seconds added to the window, because the provider counts a request when it
        arrives, a little after the token was taken; without it, two requests a minute apart by
        our clock can land 59.99 s apart by theirs."""
        self._client = client
        self.window_ms = WINDOW_MS + int(margin * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._peek = client.register_script(_PEEK)
        self._pause = client.register_script(_PAUSE)
        self._standing = client.register_script(_STANDING)

    def acquire(self, account: str, rpm: int) -> float:
        """Take one request from the account's allowance: 0 when taken, else seconds until one frees."""
        waited = self._acquire(
            keys=[keys.rate_log(account), keys.rate_pause(account)],
            args=[rpm, self.window_ms, uuid.uuid4().hex],
        )
        return int(waited) / 1000.0

    def available(self, account: str, rpm: int, *, within: float = 0.0) -> int:
        """How many requests the account may send ``within`` seconds from now (0 while paused).

        Admission looks one round ahead: a job claimed for a request that frees before the next
        round waits for it in its submit task (to the millisecond) rather than for that round.
        """
        left, paused = self._peek(
            keys=[keys.rate_log(account), keys.rate_pause(account)], args=[rpm, self.window_ms, int(within * 1000)]
        )
        return 0 if int(paused) > 0 else int(left)

    def pause(self, account: str, seconds: float, reason: str, *, out_of_rotation: bool = False) -> None:
        """Stop every worker from sending as this account for ``seconds`` (after a 429, a refused key,
        an empty balance); ``reason`` is what ``genq status`` shows."""
        why = json.dumps({"reason": reason, "out_of_rotation": out_of_rotation})
        self._pause(keys=[keys.rate_pause(account)], args=[max(int(seconds * 1000), 1), why])

    def standing(self, account: str) -> Standing:
        used, paused_ms, why = self._standing(
            keys=[keys.rate_log(account), keys.rate_pause(account)], args=[self.window_ms]
        )
        details = json.loads(why) if paused_ms and why else {}
        return Standing(
            used=int(used),
            paused_for=int(paused_ms) / 1000.0,
            reason=details.get("reason", ""),
            out_of_rotation=bool(details.get("out_of_rotation", False)),
        )
