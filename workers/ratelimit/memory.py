"""A rate-limit store in this process's memory: the Redis backend's semantics, behind one lock.

For tests and for single-process use; it limits nothing across processes. Time comes from
``clock`` (seconds), so a test can move it instead of sleeping.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from workers.ratelimit.backend import LogState, Pace


@dataclass
class _Expiring:
    value: str
    until_ms: int


@dataclass
class _Account:
    log: list[int] = field(default_factory=list)
    """Times (ms) of the requests taken, oldest first."""
    pause: _Expiring | None = None
    counts: Counter[str] = field(default_factory=Counter)


class MemoryBackend:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}
        self._leases: dict[str, _Expiring] = {}

    def acquire(self, account: str, pace: Pace, member: str, kind: str) -> int:
        with self._lock:
            now, state = self._now(), self._account(account)
            paused = self._pause_left(state, now)
            if paused > 0:
                return paused
            self._prune(state, now, pace.window_ms)
            if len(state.log) >= pace.rpm:
                return max(state.log[0] + pace.window_ms - now, 1)
            first = bisect.bisect_right(state.log, now - pace.spread_ms)
            recent = len(state.log) - first
            if recent >= pace.burst:
                return max(state.log[first + recent - pace.burst] + pace.spread_ms - now, 1)
            bisect.insort(state.log, now)
            state.counts[kind] += 1
            return 0

    def peek(self, account: str, pace: Pace, ahead_ms: int) -> tuple[int, int]:
        with self._lock:
            now, state = self._now(), self._account(account)
            self._prune(state, now, pace.window_ms)
            still = len(state.log) - bisect.bisect_right(state.log, now + ahead_ms - pace.window_ms)
            recent = len(state.log) - bisect.bisect_right(state.log, now + ahead_ms - pace.spread_ms)
            left = min(pace.rpm - still, pace.burst - recent)
            return max(left, 0), self._pause_left(state, now)

    def pause(self, account: str, ms: int, why: str) -> None:
        with self._lock:
            now, state = self._now(), self._account(account)
            if self._pause_left(state, now) < ms:
                state.pause = _Expiring(why, now + ms)

    def state(self, account: str, window_ms: int) -> LogState:
        with self._lock:
            now, state = self._now(), self._account(account)
            self._prune(state, now, window_ms)
            paused = self._pause_left(state, now)
            return LogState(len(state.log), paused, state.pause.value if paused and state.pause else "")

    def counts(self, account: str) -> dict[str, int]:
        with self._lock:
            return dict(self._account(account).counts)

    def hold(self, name: str, token: str, ms: int) -> bool:
        with self._lock:
            now = self._now()
            lease = self._leases.get(name)
            if lease is not None and lease.until_ms > now:
                return False
            self._leases[name] = _Expiring(token, now + ms)
            return True

    def release(self, name: str, token: str) -> None:
        with self._lock:
            lease = self._leases.get(name)
            if lease is not None and lease.value == token and lease.until_ms > self._now():
                del self._leases[name]

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _account(self, account: str) -> _Account:
        return self._accounts.setdefault(account, _Account())

    @staticmethod
    def _prune(state: _Account, now: int, window_ms: int) -> None:
        """Forget requests at or before ``now - window_ms``, as the script's ``ZREMRANGEBYSCORE`` does."""
        del state.log[: bisect.bisect_right(state.log, now - window_ms)]

    @staticmethod
    def _pause_left(state: _Account, now: int) -> int:
        if state.pause is None or state.pause.until_ms <= now:
            state.pause = None
            return 0
        return state.pause.until_ms - now
