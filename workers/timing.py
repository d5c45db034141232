"""When to poll a provider task first: learned, per provider and model, from what the first polls found.

Every poll is a request the key pays for in its allowance, so the first one should come when the
picture is likely done. Completion times seen at a poll are biased (a task found done at 28 s may
have been done at 18 s), so genq learns the first-poll delay itself as a running quantile: each
first poll says only whether the task was done by then, and the delay moves by a small factor,
down when it was, up when it was not, until ``QUANTILE`` of the tasks are done at their first poll.
That is the online quantile estimate (``d -= step * (done - q)``), in a multiplicative form so it
fits a 3-second model as well as a 3-minute one; one Lua script keeps it atomic across the fleet.
"""

from __future__ import annotations

import math

import redis

from workers import keys

QUANTILE = 0.9
"""The share of tasks that should be done at their first poll."""
STEP = 0.05
"""How far one observation moves the delay (as a log-factor). Small, because first polls come in
waves (a batch's tasks start together) and a wave of a hundred observations must not swing it."""
FOLLOW_UP_SHARE = 0.1
"""After a first poll that found a task still running, the next comes this share of the delay later."""

# KEYS: the hash. ARGV: field, default delay, factor, floor, ceiling. Returns the new delay.
_OBSERVE = """
local d = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[2])
d = math.min(math.max(d * tonumber(ARGV[3]), tonumber(ARGV[4])), tonumber(ARGV[5]))
redis.call('HSET', KEYS[1], ARGV[1], tostring(d))
return tostring(d)
"""


class CompletionTimes:
    def __init__(self, client: redis.Redis, *, default: float, floor: float = 0.5, ceiling: float = 600.0) -> None:
        self._client = client
        self._observe = client.register_script(_OBSERVE)
        self.default = default
        self.floor = floor
        self.ceiling = ceiling

    def first_poll_delay(self, provider: str, model: str | None) -> float:
        learned = self.learned(provider, model)
        return self.default if learned is None else learned

    def learned(self, provider: str, model: str | None) -> float | None:
        """The delay learned so far, or None when no first poll of this provider and model was seen."""
        value = self._client.hget(keys.first_poll(), _field(provider, model))
        return None if value is None else float(value)  # type: ignore[arg-type]

    def observe_first_poll(self, provider: str, model: str | None, *, done: bool) -> float:
        """Move the delay after a first poll that found the task ``done`` or not; returns the new delay."""
        factor = math.exp(-STEP * ((1.0 if done else 0.0) - QUANTILE))
        args: list[str | float] = [_field(provider, model), self.default, factor, self.floor, self.ceiling]
        return float(self._observe(keys=[keys.first_poll()], args=args))


def _field(provider: str, model: str | None) -> str:
    return f"{provider}:{model or ''}"
