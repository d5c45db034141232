"""One rate limit per provider key for the whole deployment, kept in Redis.

A sliding log: every request's time is kept for a minute, so no 60-second window ever holds more than
``rpm`` (a fixed window lets twice that through at its edge). Time comes from Redis (``TIME`` in the
script), never from a worker's clock, so skew between hosts cannot let an extra request through. Each
operation is one Lua script, atomic across every process and host.

The log is also spread: no ``spread`` seconds hold more than ``burst_limit`` requests. A log frees
each request exactly a minute after it was taken, so a minute spent in one burst at the start comes
back as the same burst a minute later, when the fleet's work is in another phase (its jobs waiting
for polls, not ready to submit) and cannot take it as fast: the requests it leaves are lost, and the
loss repeats every minute. Spread out, the allowance frees at a pace the fleet can follow.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from workers import keys

WINDOW_MS = 60_000
SPREAD_SHARE = 1.25
"""A ``spread`` stretch may hold this much more than its share of the minute, to catch up a lull."""
FREE_BURST = 10
"""Requests that may always go at once: a few jobs on a slow key are sent together, not paced."""

# KEYS: log, pause. ARGV: rpm, window (ms), member id, burst limit, spread (ms).
# Returns 0 when taken, else ms to wait.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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
return 0
"""

# KEYS: log, pause. ARGV: rpm, window (ms), ahead (ms), burst limit, spread (ms).
# Returns {requests that may go by then, ms of pause left}.
_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, ahead, spread = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local still = redis.call('ZCOUNT', KEYS[1], '(' .. (now + ahead - window), '+inf')
local recent = redis.call('ZCOUNT', KEYS[1], '(' .. (now + ahead - spread), '+inf')
local left = math.min(tonumber(ARGV[1]) - still, tonumber(ARGV[4]) - recent)
return {math.max(left, 0), math.max(redis.call('PTTL', KEYS[2]), 0)}
"""

# KEYS: pause. ARGV: ms, why (JSON). Lengthens a pause, never shortens one.
_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1]) end
return 1
"""

# KEYS: lease. ARGV: token. Deletes the lease only if it is still this holder's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

ADMISSION_LEASE_MS = 10_000
"""The longest one dispatcher may hold an account's admission: a round that died holding it frees it."""

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


def burst_limit(rpm: int, spread: float) -> int:
    """The most requests any ``spread`` seconds may hold: their share of the minute and a quarter,
    and never fewer than ``FREE_BURST`` (nor more than the minute's)."""
    if spread <= 0:
        return rpm
    return min(rpm, max(math.ceil(rpm * spread / 60.0 * SPREAD_SHARE), FREE_BURST))


class RateLimiter:
    def __init__(self, client: redis.Redis, *, margin: float = 0.0, spread: float = 0.0) -> None:
        """``margin``: seconds added to the window, because the provider counts a request when it
        arrives, a little after the token was taken; without it, two requests a minute apart by
        our clock can land 59.99 s apart by theirs. ``spread``: seconds over which requests are
        paced (0: not paced, the whole minute may go at once)."""
        self._client = client
        self.window_ms = WINDOW_MS + int(margin * 1000)
        self.spread = spread
        self._acquire = client.register_script(_ACQUIRE)
        self._peek = client.register_script(_PEEK)
        self._pause = client.register_script(_PAUSE)
        self._standing = client.register_script(_STANDING)
        self._release = client.register_script(_RELEASE)

    @contextmanager
    def admission(self, account: str) -> Iterator[bool]:
        """Hold the account's admission for one round: True when this caller holds it (no other
        dispatcher is admitting to the account), False when another one does."""
        token = uuid.uuid4().hex
        held = bool(self._client.set(keys.admission(account), token, nx=True, px=ADMISSION_LEASE_MS))
        try:
            yield held
        finally:
            if held:
                self._release(keys=[keys.admission(account)], args=[token])

    def acquire(self, account: str, rpm: int) -> float:
        """Take one request from the account's allowance: 0 when taken, else seconds until one frees."""
        waited = self._acquire(
            keys=[keys.rate_log(account), keys.rate_pause(account)],
            args=[rpm, self.window_ms, uuid.uuid4().hex, *self._pace(rpm)],
        )
        return int(waited) / 1000.0

    def available(self, account: str, rpm: int, *, within: float = 0.0) -> int:
        """How many requests the account may send ``within`` seconds from now (0 while paused).

        Admission looks one round ahead: a job claimed for a request that frees before the next
        round waits for it in its submit task (to the millisecond) rather than for that round.
        """
        left, paused = self._peek(
            keys=[keys.rate_log(account), keys.rate_pause(account)],
            args=[rpm, self.window_ms, int(within * 1000), *self._pace(rpm)],
        )
        return 0 if int(paused) > 0 else int(left)

    def _pace(self, rpm: int) -> tuple[int, int]:
        """The burst limit and the spread (ms) the scripts check; unpaced, the burst is the minute's."""
        return burst_limit(rpm, self.spread), int(self.spread * 1000) if self.spread > 0 else self.window_ms

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
