"""When to poll a provider task first: learned, per provider and model, from the tasks that finished.

Every poll is a request the key pays for in its allowance, so the first one should come when the
picture is likely done: at the delay by which ``QUANTILE`` of the tasks are done. Polls only say
"done" or "not yet", and a poll that waited for its key's allowance ran later than it was due, so a
finished task is learned from what its polls prove, timed by when each poll was due, not by when it
ran (a wait for the allowance says nothing of the picture):

- missed at its first poll, then found done by a follow-up: it finished after the last poll that
  found it running and, as far as the schedule goes, by the time the follow-up was due; it counts as
  the middle of those two moments, a short gap (a share of the delay);
- found done at its first poll: it may have finished long before, so it counts as ``EARLY_SHARE`` of
  that poll's due time (never more than the delay). That keeps the delay probing down, so it follows
  tasks that got faster, while a share of missed tasks above ``1 - QUANTILE`` pulls it back up. Such
  a time only bounds the task's, so it also lowers the highest such bound remembered to its own
  (which proves no more than this one), and while none of the last ``RECENT`` tasks was missed the delay is plainly too
  long and the share is ``FAST_SHARE``: a delay seeded far too high (a provider quicker than its
  typical time) comes down by a third with each wave of tasks, not by a twentieth every window.

The delay is the ``QUANTILE`` of the last ``WINDOW`` such times. Before anything is learned it is the
provider's typical generation time (``typical_seconds``), unless a default is set. Tasks submitted
together (a batch's first wave) are all first polled at the same delay; learning from their
completion times rather than nudging a running estimate once per poll keeps such a wave from throwing
it off. One Lua script keeps each update atomic across the fleet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from jobs.errors import RedisUnavailable
from jobs.rediscalls import talking_to_redis
from workers import keys
from workers.providers import ADAPTERS
from workers.providers.base import Provider

QUANTILE = 0.95
"""The share of tasks that should be done at their first poll."""
WINDOW = 200
"""Finished tasks remembered per provider and model."""
EARLY_SHARE = 0.95
"""What a task found done at its first poll counts as, a share of that poll's time."""
FAST_SHARE = 0.7
"""The same while none of the last ``RECENT`` finished tasks was missed at its first poll."""
RECENT = 60
"""Finished tasks looked at for a miss: at the right delay one in twenty is missed, so 60 in a row
found done happens by chance about once in 20 times."""
FOLLOW_UP_SHARE = 0.1
"""After a first poll that found a task still running, the next comes this share of the delay later."""
FLOOR = 0.5
"""Seconds; the shortest delay learned, unless the default set is shorter: whoever set that knows
their provider can answer so soon, and a delay learned back up to the floor would only wait."""
FRESH_SECONDS = 1.0
"""How long a process keeps a delay it read or learned before it asks Redis again: a submit or a poll
reads it for every task, and a delay a second old is as good as the latest."""

# KEYS: the completions list, the delays hash. ARGV: field, due, previous ('' when no poll found the
# task running), default delay, early share, window, quantile, floor, ceiling, fast share, recent.
# Returns the new delay. A time learned from a task found at its first poll (a bound) is kept negated.
_OBSERVE = """
local delay = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or ARGV[4])
local due = tonumber(ARGV[2])
local entry
if ARGV[3] == '' then
  local missed = false
  for _, v in ipairs(redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[11]) - 1)) do
    if tonumber(v) > 0 then missed = true break end
  end
  local share = missed and tonumber(ARGV[5]) or tonumber(ARGV[10])
  local value = share * math.min(due, delay)
  local highest, at = value, nil
  for i, v in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local x = tonumber(v)
    if x < 0 and -x > highest then highest, at = -x, i - 1 end
  end
  if at then redis.call('LSET', KEYS[1], at, tostring(-value)) end
  entry = -value
else
  local previous = tonumber(ARGV[3])
  entry = (previous + math.max(due, previous)) / 2
end
redis.call('LPUSH', KEYS[1], tostring(entry))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[6]) - 1)
local seen = redis.call('LRANGE', KEYS[1], 0, -1)
local values = {}
for i, v in ipairs(seen) do values[i] = math.abs(tonumber(v)) end
table.sort(values)
local d = values[math.max(1, math.ceil(tonumber(ARGV[7]) * #values))]
d = math.min(math.max(d, tonumber(ARGV[8])), tonumber(ARGV[9]))
redis.call('HSET', KEYS[2], ARGV[1], tostring(d))
return tostring(d)
"""


def typical_seconds(provider: str) -> float:
    """How long the provider's pictures usually take, as its adapter says (the base's for one unknown)."""
    return ADAPTERS.get(provider, Provider).typical_seconds


@dataclass(frozen=True)
class Completion:
    """A task found done by a poll due ``due`` seconds after its submit, the last poll that found it
    running having run ``previous`` seconds after it (None when none did: found at its first poll)."""

    provider: str
    model: str | None
    due: float
    previous: float | None


class CompletionTimes:
    def __init__(
        self,
        client: redis.Redis,
        *,
        default: float | None = None,
        typical: Callable[[str], float] = typical_seconds,
        floor: float = FLOOR,
        ceiling: float = 600.0,
    ) -> None:
        """``default``: seconds to the first poll before anything is learned, for every provider;
        None leaves it to ``typical`` (the provider's typical generation time). A default below
        ``floor`` is the floor instead."""
        self._client = client
        self._observe = client.register_script(_OBSERVE)
        self.default = default
        self._typical = typical
        self.floor = floor if default is None else min(floor, default)
        self.ceiling = ceiling
        self._fresh: dict[str, tuple[float, float]] = {}
        """The delay each field had when this process last read or learned it, and when (monotonic)."""

    def default_delay(self, provider: str) -> float:
        """Seconds to the first poll of a provider's task while nothing has been learned."""
        return self._typical(provider) if self.default is None else self.default

    def first_poll_delay(self, provider: str, model: str | None) -> float:
        """The learned delay, else the default; the default too while Redis does not answer, since
        this is read while a paid answer is being recorded, which must not fail for want of it."""
        try:
            learned = self.learned(provider, model)
        except RedisUnavailable:
            return self.default_delay(provider)
        return self.default_delay(provider) if learned is None else learned

    def learned(self, provider: str, model: str | None) -> float | None:
        """The delay learned so far (as of at most ``FRESH_SECONDS`` ago), or None when no task of this
        provider and model has finished; ``RedisUnavailable`` when Redis cannot say."""
        field = _field(provider, model)
        kept = self._fresh.get(field)
        if kept is not None and time.monotonic() - kept[1] < FRESH_SECONDS:
            return kept[0]
        with talking_to_redis("reading the learned poll delay"):
            value = self._client.hget(keys.first_poll(), field)
        if value is None:
            return None
        delay = float(value)  # type: ignore[arg-type]
        self._fresh[field] = (delay, time.monotonic())
        return delay

    def observe_finished(self, provider: str, model: str | None, *, due: float, previous: float | None) -> float:
        """A task found done by a poll due ``due`` seconds after its submit, the last poll that found
        it running having run ``previous`` seconds after it (None when none did: found at its first
        poll); returns the new delay."""
        return self.observe_all([Completion(provider, model, due, previous)])[0]

    def observe_all(self, completions: Sequence[Completion]) -> list[float]:
        """``observe_finished`` for every task one poll found done, in one round trip (each update
        still atomic on its own, in order); the new delay after each."""
        if not completions:
            return []
        with talking_to_redis("learning a completion time"):
            pipeline = self._client.pipeline(transaction=False)
            for completion in completions:
                field = _field(completion.provider, completion.model)
                args: list[str | float] = [
                    field, completion.due, "" if completion.previous is None else completion.previous,
                    self.default_delay(completion.provider), EARLY_SHARE, WINDOW, QUANTILE, self.floor, self.ceiling,
                    FAST_SHARE, RECENT,
                ]  # fmt: skip
                self._observe(keys=[keys.completions(field), keys.first_poll()], args=args, client=pipeline)
            delays = [float(value) for value in pipeline.execute()]
        now = time.monotonic()
        for completion, delay in zip(completions, delays, strict=True):
            self._fresh[_field(completion.provider, completion.model)] = (delay, now)
        return delays


def _field(provider: str, model: str | None) -> str:
    return f"{provider}:{model or ''}"
