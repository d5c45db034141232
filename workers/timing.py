"""When to poll a provider task first: learned, per provider and model, from the tasks that finished.

Every poll is a request the key pays for in its allowance, so the first one should come when the
picture is likely done: at the delay by which ``QUANTILE`` of the tasks are done. Polls only say
"done" or "not yet", so what a finished task tells about its completion time depends on its polls:

- missed at its first poll, then found done by a follow-up: it finished between its last two polls,
  and counts as the middle of that gap, which is short (a share of the delay);
- found done at its first poll: it may have finished long before, so it counts as ``EARLY_SHARE`` of
  its first poll's time. That keeps the delay probing down, so it follows tasks that got faster,
  while a share of missed tasks above ``1 - QUANTILE`` pulls it back up.

The delay is the ``QUANTILE`` of the last ``WINDOW`` such times. A poll that came late (its key's
allowance was spent) counts at the delay rather than at its actual time, so waiting for the limit
does not teach the fleet that tasks are slower than they are. Tasks submitted together (a batch's
first wave) are all first polled at the same delay; learning from their completion times rather
than nudging a running estimate once per poll keeps such a wave from throwing it off. One Lua
script keeps each update atomic across the fleet.
"""

from __future__ import annotations

import redis

from jobs.errors import RedisUnavailable
from jobs.rediscalls import talking_to_redis
from workers import keys

QUANTILE = 0.9
"""The share of tasks that should be done at their first poll."""
WINDOW = 200
"""Finished tasks remembered per provider and model."""
EARLY_SHARE = 0.95
"""What a task found done at its first poll counts as, a share of that poll's time."""
FOLLOW_UP_SHARE = 0.1
"""After a first poll that found a task still running, the next comes this share of the delay later."""

# KEYS: the completions list, the delays hash. ARGV: field, elapsed, at first poll (1/0), gap,
# default delay, early share, window, quantile, floor, ceiling. Returns the new delay.
_OBSERVE = """
local delay = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or ARGV[5])
local elapsed = tonumber(ARGV[2])
local value
if ARGV[3] == '1' then
  value = tonumber(ARGV[6]) * math.min(elapsed, delay)
else
  value = math.max(elapsed - tonumber(ARGV[4]) / 2, 0)
end
redis.call('LPUSH', KEYS[1], tostring(value))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[7]) - 1)
local seen = redis.call('LRANGE', KEYS[1], 0, -1)
local values = {}
for i, v in ipairs(seen) do values[i] = tonumber(v) end
table.sort(values)
local d = values[math.max(1, math.ceil(tonumber(ARGV[8]) * #values))]
d = math.min(math.max(d, tonumber(ARGV[9])), tonumber(ARGV[10]))
redis.call('HSET', KEYS[2], ARGV[1], tostring(d))
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
        """The learned delay, else the default; the default too while Redis does not answer, since
        this is read while a paid answer is being recorded, which must not fail for want of it."""
        try:
            learned = self.learned(provider, model)
        except RedisUnavailable:
            return self.default
        return self.default if learned is None else learned

    def learned(self, provider: str, model: str | None) -> float | None:
        """The delay learned so far, or None when no task of this provider and model has finished;
        ``RedisUnavailable`` when Redis cannot say."""
        with talking_to_redis("reading the learned poll delay"):
            value = self._client.hget(keys.first_poll(), _field(provider, model))
        return None if value is None else float(value)  # type: ignore[arg-type]

    def observe_finished(
        self, provider: str, model: str | None, *, elapsed: float, at_first_poll: bool, gap: float = 0.0
    ) -> float:
        """A task found done ``elapsed`` seconds after its submit, at its first poll or by a follow-up
        ``gap`` seconds after the poll before; returns the new delay."""
        field = _field(provider, model)
        args: list[str | float] = [
            field, elapsed, 1 if at_first_poll else 0, gap, self.default, EARLY_SHARE, WINDOW, QUANTILE,
            self.floor, self.ceiling,
        ]  # fmt: skip
        with talking_to_redis("learning a completion time"):
            return float(self._observe(keys=[keys.completions(field), keys.first_poll()], args=args))


def _field(provider: str, model: str | None) -> str:
    return f"{provider}:{model or ''}"
