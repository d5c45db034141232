"""One rate limit per provider key for the whole deployment: the policy above a backend's log.

A sliding log: every request's time is kept for a minute, so no 60-second window ever holds more than
``rpm`` (a fixed window lets twice that through at its edge). In the fleet the log lives in Redis and
time comes from Redis, never from a worker's clock, so skew between hosts cannot let an extra request
through; each primitive is atomic across every process and host (see ``backend``).

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
from typing import Literal

import redis

from workers import keys
from workers.ratelimit.backend import Backend, Pace
from workers.ratelimit.redis import RedisBackend

WINDOW_MS = 60_000
SPREAD_SHARE = 1.25
"""A ``spread`` stretch may hold this much more than its share of the minute, to catch up a lull."""
FREE_BURST = 10
"""Requests that may always go at once: a few jobs on a slow key are sent together, not paced."""
ADMISSION_LEASE_MS = 10_000
"""The longest one dispatcher may hold an account's admission: a round that died holding it frees it."""

RequestKind = Literal["submit", "poll", "other"]
"""What a request taken from the allowance is for, as the metrics count it; ``other``: a lookup of the
provider's record of past submits."""


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
    def __init__(self, store: Backend | redis.Redis, *, margin: float = 0.0, spread: float = 0.0) -> None:
        """``store``: a backend, or a Redis client for the fleet's. ``margin``: seconds added to the
        window, because the provider counts a request when it arrives, a little after the token was
        taken; without it, two requests a minute apart by our clock can land 59.99 s apart by theirs.
        ``spread``: seconds over which requests are paced (0: not paced, the whole minute may go at once)."""
        self.backend: Backend = RedisBackend(store) if isinstance(store, redis.Redis) else store
        self.window_ms = WINDOW_MS + int(margin * 1000)
        self.spread = spread

    @contextmanager
    def admission(self, account: str) -> Iterator[bool]:
        """Hold the account's admission for one round: True when this caller holds it (no other
        dispatcher is admitting to the account), False when another one does."""
        token = uuid.uuid4().hex
        held = self.backend.hold(keys.admission(account), token, ADMISSION_LEASE_MS)
        try:
            yield held
        finally:
            if held:
                self.backend.release(keys.admission(account), token)

    def acquire(self, account: str, rpm: int, *, kind: RequestKind = "other") -> float:
        """Take one request from the account's allowance: 0 when taken, else seconds until one frees.
        ``kind`` only labels the request in the account's counters; it never changes the answer."""
        return self.backend.acquire(account, self._pace(rpm), uuid.uuid4().hex, kind) / 1000.0

    def available(self, account: str, rpm: int, *, within: float = 0.0) -> int:
        """How many requests the account may send ``within`` seconds from now (0 while paused).

        Admission looks one round ahead: a job claimed for a request that frees before the next
        round waits for it in its submit task (to the millisecond) rather than for that round.
        """
        left, paused = self.backend.peek(account, self._pace(rpm), int(within * 1000))
        return 0 if paused > 0 else left

    def _pace(self, rpm: int) -> Pace:
        """What the backend checks; unpaced, the burst is the minute's and the spread the window."""
        spread_ms = int(self.spread * 1000) if self.spread > 0 else self.window_ms
        return Pace(rpm=rpm, window_ms=self.window_ms, burst=burst_limit(rpm, self.spread), spread_ms=spread_ms)

    def pause(self, account: str, seconds: float, reason: str, *, out_of_rotation: bool = False) -> None:
        """Stop every worker from sending as this account for ``seconds`` (after a 429, a refused key,
        an empty balance); ``reason`` is what ``genq status`` shows."""
        why = json.dumps({"reason": reason, "out_of_rotation": out_of_rotation})
        self.backend.pause(account, max(int(seconds * 1000), 1), why)

    def standing(self, account: str) -> Standing:
        state = self.backend.state(account, self.window_ms)
        details = json.loads(state.why) if state.paused_ms and state.why else {}
        return Standing(
            used=state.used,
            paused_for=state.paused_ms / 1000.0,
            reason=details.get("reason", ""),
            out_of_rotation=bool(details.get("out_of_rotation", False)),
        )

    def requests(self, account: str) -> dict[str, int]:
        """Requests the account ever took from its allowance, by kind: the metrics' counters."""
        return self.backend.counts(account)
