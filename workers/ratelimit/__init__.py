"""Rate limits per provider key: the limiter (``limiter``) above a store of atomic primitives
(``backend``), kept in Redis for the fleet (``redis``) or in memory for one process (``memory``)."""

from __future__ import annotations

from workers.ratelimit.backend import Backend, LogState, Pace
from workers.ratelimit.limiter import (
    ADMISSION_LEASE_MS,
    FREE_BURST,
    SPREAD_SHARE,
    WINDOW_MS,
    RateLimiter,
    RequestKind,
    Standing,
    burst_limit,
)
from workers.ratelimit.memory import MemoryBackend
from workers.ratelimit.redis import RedisBackend

__all__ = [
    "ADMISSION_LEASE_MS", "FREE_BURST", "SPREAD_SHARE", "WINDOW_MS", "Backend", "LogState", "MemoryBackend", "Pace",
    "RateLimiter", "RedisBackend", "RequestKind", "Standing", "burst_limit",
]  # fmt: skip
