"""Admission: how many pending jobs each account can take now, and claiming exactly that many.

Pending work waits in the database, not in the broker: a round claims only what each account may
send in the next moments (its in-flight room and what its rate limit allows right now), marks those
jobs ``queued`` with the account chosen, and returns them for a submit message each. Two dispatchers
at once cannot claim one job twice: the claim is a compare-and-set on ``pending`` (and on PostgreSQL
the candidates are locked with SKIP LOCKED, so they do not even contend). Nor can they both fill one
account's room: an account is admitted to by one dispatcher at a time (a lease in Redis), which
counts its places again once it holds the lease.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from itertools import groupby

from sqlalchemy import Engine, func, or_, update
from sqlmodel import Session, col, select

from jobs.accounts import Account
from jobs.db import is_sqlite, session_scope
from jobs.lifecycle import IN_FLIGHT, BatchState, JobState, TaskState
from jobs.models import Batch, Job, ProviderTask, utcnow
from workers.providers import ADAPTERS
from workers.providers.base import Provider
from workers.runtime import Runtime


def dispatch(runtime: Runtime) -> list[int]:
    """One admission round; the ids of the jobs it queued, in the order they should be sent.

    Where a provider counts polls against the key's limit, polls come first: a round leaves the
    requests that polls due soon will need, because a finished picture waiting for its poll holds an
    in-flight place and a link that may expire, while a job waiting to be sent costs nothing yet.
    """
    held = held_places(runtime.engine)
    queued: list[int] = []
    for account in runtime.accounts.values():
        adapter = ADAPTERS.get(account.provider)
        if adapter is None or account.max_in_flight - sum(held.get(account.name, {}).values()) <= 0:
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
    if adapter.polls_count_against_limit and allowance > 0:
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


def polls_due(engine: Engine, account: str, by: datetime) -> int:
    """Provider tasks of the account that will be polled before ``by``."""
    with session_scope(engine) as session:
        return session.exec(
            select(func.count())
            .select_from(ProviderTask)
            .where(
                col(ProviderTask.state) == TaskState.RUNNING.value,
                col(ProviderTask.account) == account,
                col(ProviderTask.next_poll_at) <= by,
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
    """
    with session_scope(engine) as session:
        running = select(Batch.id, Batch.priority).where(col(Batch.state) == BatchState.RUNNING.value)
        if only_batch is not None:
            running = running.where(col(Batch.id) == only_batch)
        batches = session.exec(running.order_by(col(Batch.priority).desc(), col(Batch.id))).all()
        chosen: list[int] = []
        for _, group in groupby(batches, key=lambda row: row[1]):
            per_batch = [
                (held.get(batch_id or 0, 0), _candidates(session, engine, account, batch_id, limit - len(chosen)))
                for batch_id, _ in group
            ]
            chosen += fair_shares(per_batch, limit - len(chosen))
            if len(chosen) >= limit:
                break
        if not chosen:
            return []
        now = utcnow()
        lease = now + timedelta(seconds=queued_lease)
        moved = session.execute(
            update(Job)
            .where(col(Job.id).in_(chosen), col(Job.state) == JobState.PENDING.value)
            .values(state=JobState.QUEUED.value, account=account.name, updated_at=now, lease_until=lease)
            .returning(col(Job.id))
        )
        claimed = {row[0] for row in moved}
    return [job_id for job_id in chosen if job_id in claimed]


def _candidates(session: Session, engine: Engine, account: Account, batch_id: int | None, limit: int) -> list[int]:
    query = (
        select(Job.id)
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
    return [job_id for job_id in session.exec(query).all() if job_id is not None]


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
