"""What a batch will cost before anything is sent: provider requests, credits, and time at its accounts' limits.

The same rules the fleet runs by are counted here, so the estimate holds: one submit a job (plus an
upload a reference where the provider takes them that way), polls as the learned first-poll delay
makes them (``QUANTILE`` of tasks done at the first poll, the rest at a follow-up or two; where
the key binds, one follow-up, which waits its turn in the allowance and finds the task done), grouped
as the provider allows, and only the requests a provider counts spend its keys' allowance. Time is
the longer of what the allowance and the in-flight caps permit, plus one generation. The allowance:
what the in-flight places and the key's pace take at once, then, unpaced, a minute's worth a minute;
paced, each minute's requests at the pace, freed again a minute after they were taken.

Caps are set beside it: the batch's ``budget`` and what the accounts' ``daily_credits`` leave of today.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from jobs.accounts import Account
from jobs.spec import BatchSpec, JobSpec
from workers.providers import ADAPTERS
from workers.providers.base import Provider, polls_count
from workers.ratelimit import burst_limit
from workers.timing import QUANTILE

FOLLOW_UPS_PER_MISS = 1.5
"""Follow-up polls a task not done at its first poll takes, on average (the follow-ups back off)."""
BOUND_FOLLOW_UPS_PER_MISS = 1.0
"""The same where the key binds: the follow-up waits its turn in the allowance, and finds it done."""


@dataclass(frozen=True)
class ProviderPlan:
    provider: str
    jobs: int
    pictures: int
    submits: int
    polls: int
    credits: int
    limited_requests: int
    """The requests that spend the keys' allowance (submits, and polls where the provider counts them)."""
    accounts: int
    rpm: int
    """The allowance of all its accounts together, per minute."""
    seconds: float
    daily_left: int | None = None
    """Credits its accounts may still spend today by their ``daily_credits``; None when one has no cap."""

    @property
    def fits_today(self) -> bool:
        return self.daily_left is None or self.credits <= self.daily_left

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    providers: tuple[ProviderPlan, ...]
    budget: int | None = None
    """The batch's cap in credits, where it has one."""

    @property
    def fits_budget(self) -> bool:
        return self.budget is None or self.credits <= self.budget

    @property
    def requests(self) -> int:
        return sum(p.submits + p.polls for p in self.providers)

    @property
    def credits(self) -> int:
        return sum(p.credits for p in self.providers)

    @property
    def seconds(self) -> float:
        """Providers run side by side, so the batch takes as long as its slowest provider."""
        return max((p.seconds for p in self.providers), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "credits": self.credits,
            "seconds": round(self.seconds, 1),
            "budget": self.budget,
            "fits_budget": self.fits_budget,
            "providers": [p.to_json() | {"fits_today": p.fits_today} for p in self.providers],
        }


def plan_batch(
    spec: BatchSpec,
    accounts: Mapping[str, Account],
    generation_seconds: Callable[[str, str | None], float],
    *,
    spread: float = 0.0,
    spent_today: Mapping[str, int] | None = None,
) -> Plan:
    """``generation_seconds(provider, model)``: how long a picture takes (the learned first-poll delay);
    ``spread``: the seconds over which the fleet paces each key (``Settings.rate_spread``);
    ``spent_today``: credits each account holds today, against its ``daily_credits``."""
    jobs_by_provider: dict[str, list[JobSpec]] = defaultdict(list)
    for job in spec.jobs:
        jobs_by_provider[job.provider].append(job)
    plans = []
    for provider, jobs in sorted(jobs_by_provider.items()):
        adapter = ADAPTERS[provider]
        serving = [account for account in accounts.values() if account.provider == provider]
        costs = [adapter.cost(job) for job in jobs]
        tasks = sum(cost.tasks for cost in costs)
        submits = sum(cost.requests for cost in costs)
        rpm = sum(account.rpm for account in serving)
        slots = sum(account.max_in_flight for account in serving)
        bursts = [(account.max_in_flight, burst_limit(account.rpm, spread)) for account in serving]
        at_once = sum(min(places, burst) for places, burst in bursts)
        pace = Pace(at_once, sum(burst for _, burst in bursts), spread, rpm)
        generation = max((generation_seconds(provider, job.model) for job in jobs), default=0.0)
        by_slots = generation * math.ceil(len(jobs) / slots) if slots else math.inf
        polls = 0 if adapter.synchronous else _polls(tasks, adapter.batch_poll_size)
        counted = _polls_counted(serving, adapter)
        if counted and polls:
            bound_polls = _polls(tasks, adapter.batch_poll_size, BOUND_FOLLOW_UPS_PER_MISS)
            if pace.seconds(submits + bound_polls) > by_slots:
                # The key binds, so a missed task's follow-up waits its turn in the allowance and finds it done.
                polls = bound_polls
        limited = submits + (polls if counted else 0)
        plans.append(
            ProviderPlan(
                provider=provider, jobs=len(jobs), pictures=sum(cost.pictures for cost in costs), submits=submits,
                polls=polls, credits=sum(cost.credits for cost in costs), limited_requests=limited,
                accounts=len(serving), rpm=rpm, seconds=max(pace.seconds(limited) + generation, by_slots),
                daily_left=_daily_left(serving, spent_today or {}),
            )
        )  # fmt: skip
    return Plan(tuple(plans), budget=spec.budget)


def _polls_counted(serving: list[Account], adapter: type[Provider]) -> bool:
    """Whether the provider's polls spend its keys' allowance: jobs may go to any of its accounts, so
    they are counted where any of them counts them (``polls_count``)."""
    if not serving:
        return adapter.polls_count_against_limit
    return any(polls_count(account, adapter) for account in serving)


def _daily_left(serving: list[Account], spent_today: Mapping[str, int]) -> int | None:
    if not serving or any(account.daily_credits is None for account in serving):
        return None
    return sum(max((account.daily_credits or 0) - spent_today.get(account.name, 0), 0) for account in serving)


@dataclass(frozen=True)
class Pace:
    """How a provider's keys together spend their allowance."""

    at_once: int
    """Requests sent as soon as the batch starts: what the in-flight places and the pace take."""
    burst: int
    """Requests any ``spread`` seconds may hold (``burst_limit``), all keys together."""
    spread: float
    """Seconds of the pace; 0 when unpaced."""
    rpm: int

    def seconds(self, limited: int) -> float:
        """Seconds the allowance takes for ``limited`` requests. Unpaced, ``at_once`` then the limit's
        worth a minute. Paced, a key's log frees each request a minute after it was taken, so each
        minute's requests go as the first minute's did (``at_once``, then ``burst`` a ``spread``
        seconds): whole minutes, then what is left of the last at the pace."""
        if not self.rpm:
            return math.inf
        if self.spread <= 0:
            return 60.0 * max(limited - self.at_once, 0) / self.rpm
        minutes = max(limited - 1, 0) // self.rpm
        rest = limited - minutes * self.rpm
        return 60.0 * minutes + self.spread * max(rest - self.at_once, 0) / self.burst


def _polls(tasks: int, group: int, follow_ups: float = FOLLOW_UPS_PER_MISS) -> int:
    """First polls for every task, ``follow_ups`` for each not done yet, in requests of ``group`` tasks."""
    return math.ceil(round(tasks * (1 + (1 - QUANTILE) * follow_ups) / group, 6))
