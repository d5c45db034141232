"""Requests per minute per key, as a provider counts them: a sliding 60 s window of admitted requests.

Refused requests are not counted, so a client that waits the ``Retry-After`` it was given gets in.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW_SECONDS = 60.0


class SlidingWindow:
    """The times of admitted requests per key (any hashable), over the last ``window`` seconds."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._times: dict[object, deque[float]] = {}

    def admit(self, key: object, limit: int | None, now: float) -> int | None:
        """Count one request and return None, or, past ``limit``, the whole seconds until one is allowed."""
        if limit is None:
            return None
        times = self._times.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= limit:
            return max(1, math.ceil(times[0] + self.window - now))
        times.append(now)
        return None
