"""Admission: how many pending jobs each account can take now, and claiming exactly that many.

Pending work waits in the database, not in the broker: a round claims only what each account may
send in the next moments (its in-flight room and what its rate limit allows right now), marks those
jobs ``queued`` with the account chosen, and returns them for a submit message each. Two dispatchers
at once cannot claim one job twice: the claim is a compare-and-set on ``pending`` (and on PostgreSQL
the candidates are locked with SKIP LOCKED, so they do not even contend). Nor can they both fill one
account's room: an account is admitted to by one dispatcher at a time (a lease in Redis), which
counts its places again once it holds the lease.

Control is obeyed here, each round, for the whole fleet: a paused or canceled batch has nothing
claimed, an account paused by hand takes nothing, and no job is claimed whose price would take its
batch past its ``budget`` or its account past its ``daily_credits`` (what is in flight counted). A
batch whose next job does not fit its budget is paused, ``budget reached``, for a person to raise it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, func, or_, update
from sqlmodel import Session, col, select

from jobs.accounts import Account
from jobs.control import CANCELED_REASON, account_pauses, batch_credits, credits_today
from jobs.db import is_sqlite, session_scope
from jobs.lifecycle import IN_FLIGHT, BatchState, JobState, TaskState, move_all
from jobs.models import Batch, Job, ProviderTask, utcnow
from jobs.spec import JobSpec
from jobs.states import BUDGET_REACHED
from workers.providers import ADAPTERS
from workers.providers.base import Provider, polls_count
from workers.runtime import Runtime


def dispatch(runtime: Runtime) -> list[int]:
    """One admission round; the ids of the jobs it queued, in the order they should be sent.

    Where an account's polls count against its key's limit (``polls_count``), polls come first: a round leaves the
    requests that polls due soon will need, because a finished picture waiting for its poll holds an
    in-flight place and a link that may expire, while a job waiting to be sent costs nothing yet.
    """
    cancel_what_waits(runtime)
    held = held_places(runtime.engine)
    with Session(runtime.engine) as session:
        paused = account_pauses(session)
    queued: list[int] = []
    for account in runtime.accounts.values():
        adapter = ADAPTERS.get(account.provider)
        if adapter is None or account.name in paused:
            continue
        if account.max_in_flight - sum(held.get(account.name, {}).values()) <= 0:
            continue
        with runtime.limiter.admission(account.name) as admitting:
            if admitting:
                queued += _admit(runtime, account, adapter)
    return queued


def _admit(runtime: Runtime, account: Account, adapter: type[Provider]) -> list[int]:
    """One account's share of a round, while this dispatcher alone admits to it: the places its
    batches hold are read again under that lease, so two rounds at once cannot both fill them."""
    by_batch = held_places(runtime.engine, account.name).get(account.name, {})
    room = account.max_in_flight - sum(by_batch.values())
    if room <= 0:
        return []
    allowance = runtime.limiter.available(account.name, account.rpm, within=runtime.settings.dispatch_interval)
    if polls_count(account, adapter) and allowance > 0:
        horizon = utcnow() + timedelta(seconds=2 * runtime.settings.dispatch_interval)
        allowance -= math.ceil(polls_due(runtime.engine, account.name, horizon) / adapter.batch_poll_size)
    room = min(room, allowance)
    if room <= 0:
        return []
    return claim(
        runtime.engine,
        account,
        room,
        by_batch,
        queued_lease=runtime.settings.queued_lease,
        only_batch=runtime.settings.only_batch,
    )


def cancel_what_waits(runtime: Runtime) -> None:
    """Jobs of a canceled batch that came back to waiting after the cancel (a submit that started
    nothing, a lost answer sent again) are canceled too, and a batch left with nothing unfinished ends."""
    from workers.finish import finish_batch_if_done

    with session_scope(runtime.engine) as session:
        canceled = session.exec(
            select(Batch.id).where(col(Batch.state) == BatchState.RUNNING.value, col(Batch.canceled).is_not(None))
        ).all()
        if canceled:
            move_all(session, [col(Job.batch_id).in_(canceled)], [JobState.PENDING], JobState.CANCELED,
                     error=CANCELED_REASON, credits=None)  # fmt: skip
    for batch_id in canceled:
        if batch_id is not None:
            finish_batch_if_done(runtime, batch_id)


def polls_due(engine: Engine, account: str, by: datetime) -> int:
    """Provider tasks of the account that will be polled before ``by``: by their due time, so a poll
    leased by the sweep or waiting for the allowance (its ``next_poll_at`` pushed past the wait) is
    still counted, and goes before submits."""
    with session_scope(engine) as session:
        return session.exec(
            select(func.count())
            .select_from(ProviderTask)
            .where(
                col(ProviderTask.state) == TaskState.RUNNING.value,
                col(ProviderTask.account) == account,
                func.coalesce(col(ProviderTask.poll_due_at), col(ProviderTask.next_poll_at)) <= by,
            )
        ).one()


def held_places(engine: Engine, account: str | None = None) -> dict[str, dict[int, int]]:
    """The in-flight places of each account's cap (or of one), by the batch holding them."""
    which = col(Job.account).is_not(None) if account is None else col(Job.account) == account
    with session_scope(engine) as session:
        rows = session.exec(
            select(Job.account, Job.batch_id, func.count())
            .where(col(Job.state).in_([state.value for state in IN_FLIGHT]), which)
            .group_by(col(Job.account), col(Job.batch_id))
        ).all()
    held: dict[str, dict[int, int]] = {}
    for account, batch_id, count in rows:
        if account is not None:
            held.setdefault(account, {})[batch_id] = count
    return held


def in_flight(engine: Engine) -> dict[str, int]:
    """Jobs holding a place of each account's in-flight cap."""
    return {account: sum(by_batch.values()) for account, by_batch in held_places(engine).items()}


def claim(
    engine: Engine,
    account: Account,
    limit: int,
    held: Mapping[int, int],
    *,
    queued_lease: float = 30.0,
    only_batch: int | None = None,
) -> list[int]:
    """Move up to ``limit`` pending jobs this account can serve to ``queued``; ``held``: the places
    of its cap each batch holds now; ``only_batch``: take none but that batch's.

    Higher-priority batches first; between batches of equal priority, fair shares of the account:
    each place goes to the batch holding the fewest of its places now, so an overnight catalog of
    50,000 jobs does not starve a sprite batch of 40 started after it, even when a round has room for
    one job only (a job of the catalog just finished). Each batch's candidates are read through the
    ``(batch_id, state, provider, id)`` index with a limit, so a round costs the same with a
    thousand pending jobs as with a million.

    Paused and canceled batches are passed over, an account paused by hand takes nothing, and each
    claimed job takes its price from its batch's budget and its account's credits of the day.
    """
    with session_scope(engine) as session:
        if account.name in account_pauses(session):
            return []
        running = select(Batch.id, Batch.priority, Batch.budget).where(
            col(Batch.state) == BatchState.RUNNING.value,
            col(Batch.paused_reason).is_(None),
            col(Batch.canceled).is_(None),
        )
        if only_batch is not None:
            running = running.where(col(Batch.id) == only_batch)
        batches = session.exec(running.order_by(col(Batch.priority).desc(), col(Batch.id))).all()
        budgets = {batch_id: budget for batch_id, _, budget in batches if batch_id is not None and budget is not None}
        spent = batch_credits(session, list(budgets))
        left = {batch_id: budget - spent.get(batch_id, 0) for batch_id, budget in budgets.items()}
        account_left = _account_left(session, account)
        prices: dict[int, int] = {}
        over_budget: list[int] = []
        chosen: list[int] = []
        for _, group in groupby(batches, key=lambda row: row[1]):
            per_batch = []
            for batch_id, _, _ in group:
                assert batch_id is not None
                candidates = _candidates(session, engine, account, batch_id, limit - len(chosen))
                prices.update(candidates)
                fitting = _within(list(candidates), prices, left.get(batch_id))
                if len(fitting) < len(candidates):
                    over_budget.append(batch_id)
                per_batch.append((held.get(batch_id, 0), fitting))
            dealt = fair_shares(per_batch, limit - len(chosen))
            if account_left is not None:
                dealt = _within(dealt, prices, account_left)
                account_left -= sum(prices[job_id] for job_id in dealt)
            chosen += dealt
            if len(chosen) >= limit:
                break
        if over_budget:
            session.execute(update(Batch).where(col(Batch.id).in_(over_budget)).values(paused_reason=BUDGET_REACHED))
        if not chosen:
            return []
        claimed = _queue(session, account, chosen, prices, queued_lease)
    return [job_id for job_id in chosen if job_id in claimed]


def _account_left(session: Session, account: Account) -> int | None:
    """Credits the account may still take today; None when it has no daily cap."""
    if account.daily_credits is None:
        return None
    return account.daily_credits - credits_today(session, [account.name]).get(account.name, 0)


def _within(job_ids: Sequence[int], prices: Mapping[int, int], left: int | None) -> list[int]:
    """The first of ``job_ids`` whose prices together fit in ``left`` credits (all of them when None).
    The first that does not fit ends the list: a cheaper job behind it waits its turn, in order."""
    if left is None:
        return list(job_ids)
    fitting: list[int] = []
    for job_id in job_ids:
        left -= prices[job_id]
        if left < 0:
            break
        fitting.append(job_id)
    return fitting


def _queue(session: Session, account: Account, chosen: Sequence[int], prices: Mapping[int, int],
           queued_lease: float) -> set[int]:  # fmt: skip
    """Move the chosen jobs ``pending -> queued`` on the account, each holding its price; the ids moved."""
    now = utcnow()
    lease = now + timedelta(seconds=queued_lease)
    by_price: dict[int, list[int]] = {}
    for job_id in chosen:
        by_price.setdefault(prices[job_id], []).append(job_id)
    claimed: set[int] = set()
    for price, ids in by_price.items():
        moved = session.execute(
            update(Job)
            .where(col(Job.id).in_(ids), col(Job.state) == JobState.PENDING.value)
            .values(state=JobState.QUEUED.value, account=account.name, updated_at=now, lease_until=lease, credits=price)
            .returning(col(Job.id))
        )
        claimed |= {row[0] for row in moved}
    return claimed


def _candidates(session: Session, engine: Engine, account: Account, batch_id: int | None, limit: int) -> dict[int, int]:
    """The batch's next pending jobs this account can serve, in order, with their prices in credits."""
    query = (
        select(Job.id, Job.provider, Job.spec)
        .where(
            col(Job.batch_id) == batch_id,
            col(Job.state) == JobState.PENDING.value,
            col(Job.provider) == account.provider,
            or_(col(Job.pinned_account).is_(None), col(Job.pinned_account) == account.name),
        )
        .order_by(col(Job.id))
        .limit(limit)
    )
    if not is_sqlite(engine):
        query = query.with_for_update(skip_locked=True)
    return {job_id: price(provider, spec) for job_id, provider, spec in session.exec(query).all() if job_id is not None}


def price(provider: str, spec: Mapping[str, Any]) -> int:
    """A job's price in credits by its adapter; one credit a picture for a row no adapter can read."""
    adapter = ADAPTERS.get(provider)
    try:
        return adapter.cost(JobSpec.model_validate(spec)).credits if adapter else 1
    except ValidationError:
        return 1


def fair_shares(queues: Sequence[tuple[int, Sequence[int]]], limit: int) -> list[int]:
    """Up to ``limit`` jobs from ``(places held, candidates)`` per batch, each to the batch holding fewest.

    Ties go to the batch listed first (the older one). The result is in the order the jobs were given.
    """
    heap = [(held, index, 0) for index, (held, candidates) in enumerate(queues) if candidates]
    heapq.heapify(heap)
    dealt: list[int] = []
    while heap and len(dealt) < limit:
        held, index, taken = heapq.heappop(heap)
        candidates = queues[index][1]
        dealt.append(candidates[taken])
        if taken + 1 < len(candidates):
            heapq.heappush(heap, (held + 1, index, taken + 1))
    return dealt
