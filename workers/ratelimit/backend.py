"""What a rate-limit store must do: a few primitives, each atomic for every process that shares it.

The limiter above holds the policy (how many, how paced, what a pause means); a backend only keeps
per-account logs and pauses and answers in milliseconds of its own clock. Each primitive reads and
writes in one step, because two workers taking the last request of a minute at once must not both
get it. Two backends: ``redis`` (the fleet's, a Lua script per primitive and Redis's clock) and
``memory`` (one process, a lock, for tests and single-process use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Pace:
    """What an account may send: ``rpm`` requests in any ``window_ms``, ``burst`` in any ``spread_ms``."""

    rpm: int
    window_ms: int
    burst: int
    spread_ms: int


@dataclass(frozen=True)
class LogState:
    """An account's log and pause as a backend keeps them, uninterpreted."""

    used: int
    """Requests in the window now."""
    paused_ms: int
    """Milliseconds of pause left; 0 when not paused."""
    why: str
    """What the pause was given with (the limiter's JSON); empty when not paused."""


class Backend(Protocol):
    def acquire(self, account: str, pace: Pace, member: str, kind: str) -> int:
        """Take one request: log ``member`` now and count it under ``kind``, unless paused, the window
        is full or the spread is; 0 when taken, else milliseconds until one frees (at least 1)."""
        ...

    def peek(self, account: str, pace: Pace, ahead_ms: int) -> tuple[int, int]:
        """Requests that may go ``ahead_ms`` from now (by the log as it stands), and ms of pause left."""
        ...

    def pause(self, account: str, ms: int, why: str) -> None:
        """Pause the account for ``ms`` with ``why``, unless it is paused for longer already."""
        ...

    def state(self, account: str, window_ms: int) -> LogState:
        """Requests in the last ``window_ms`` and the pause, read together."""
        ...

    def counts(self, account: str) -> dict[str, int]:
        """Requests ever taken by the account, by kind; empty when none."""
        ...

    def hold(self, name: str, token: str, ms: int) -> bool:
        """Take the lease ``name`` for ``ms`` as ``token``; False when someone else holds it."""
        ...

    def release(self, name: str, token: str) -> None:
        """Give the lease back, only if ``token`` still holds it (a lease that ran out may be another's)."""
        ...
