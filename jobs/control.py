"""Control over a run, as the database records it: a batch paused, resumed or canceled, an account
paused by hand, and the credits batches and accounts have spent against their caps.

Everything here is a row the next dispatch round reads, so a command is obeyed by the whole fleet
and survives restarts; nothing here talks to Redis or a provider (ending tasks at the provider on a
cancel is the workers', ``workers.polling.cancel_running``).

Credits: a job holds its price from the moment admission claims it (``Job.credits``), so what is
in flight counts against a cap before the provider has charged it; the provider's own figure
replaces it when it answers one, and a submit that started nothing gives it back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, func, or_, update
from sqlmodel import Session, col, select

from jobs.db import session_scope, upsert_insert
from jobs.errors import ConfigError, NotFound
from jobs.lifecycle import JobState, move_all
from jobs.models import AccountPause, Batch, Job, ProviderTask, utcnow
from jobs.states import BUDGET_REACHED, PAUSED_BY_HAND, BatchState, Cancel, TaskState

UNSENT = (JobState.PENDING.value, JobState.QUEUED.value)
"""States of a job whose credits are held but not yet charged."""


@dataclass(frozen=True)
class Canceled:
    """What ``cancel_batch`` ended."""

    waiting: int
    """Pending and queued jobs canceled."""
    running: int = 0
    """Running jobs canceled (``--running``); their tasks are no longer polled."""
    tasks: tuple[tuple[str, str], ...] = ()
    """The provider tasks ended with them, as (account, the provider's task id): to delete where it can."""


def _running_batch(session: Session, batch_id: int) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    if batch.state != BatchState.RUNNING:
        raise ConfigError(f"batch {batch_id} is {batch.state} already")
    if batch.canceled is not None:
        raise ConfigError(f"batch {batch_id} was canceled")
    return batch


def pause_batch(engine: Engine, batch_id: int, reason: str = PAUSED_BY_HAND) -> int:
    """Stop sending the batch; its queued jobs go back to waiting. Returns how many went back.

    What is running at the provider is paid for, so it is still polled and collected.
    """
    with session_scope(engine) as session:
        _running_batch(session, batch_id)
        session.execute(update(Batch).where(col(Batch.id) == batch_id).values(paused_reason=reason))
        return len(_unqueue(session, [col(Job.batch_id) == batch_id]))


def _unqueue(session: Session, where: Iterable[object]) -> list[int]:
    """Queued jobs back to pending, their account choice and held credits given back."""
    return move_all(session, where, [JobState.QUEUED], JobState.PENDING,  # type: ignore[arg-type]
                    account=col(Job.pinned_account), credits=None, lease_until=None)  # fmt: skip


def resume_batch(engine: Engine, batch_id: int, *, budget: int | None = None) -> Batch:
    """Send the batch again, with its budget raised to ``budget`` credits if given. A batch paused
    for its budget is refused without a higher one: it would only pause again."""
    with session_scope(engine) as session:
        batch = _running_batch(session, batch_id)
        cap = budget if budget is not None else batch.budget
        if cap is not None:
            held = batch_credits(session, [batch_id]).get(batch_id, 0)
            pending = session.exec(
                select(func.count()).where(col(Job.batch_id) == batch_id, col(Job.state) == JobState.PENDING.value)
            ).one()
            if held >= cap and pending:
                raise ConfigError(
                    f"batch {batch_id} has spent or holds {held} credits of its budget of {cap}: "
                    f"give a higher one (`genq resume {batch_id} --budget N`)"
                )
        values: dict[str, object] = {"paused_reason": None}
        if budget is not None:
            values["budget"] = budget
        session.execute(update(Batch).where(col(Batch.id) == batch_id).values(**values))
        batch.paused_reason, batch.budget = None, cap
        session.expunge(batch)
    return batch


def cancel_batch(engine: Engine, batch_id: int, *, running: bool = False) -> Canceled:
    """End what waits of the batch (and with ``running``, what runs too): those jobs become
    ``canceled`` and nothing more of it is sent. Jobs whose pictures are being collected finish."""
    reason = CANCELED_REASON
    with session_scope(engine) as session:
        _running_batch(session, batch_id)
        what = Cancel.RUNNING if running else Cancel.WAITING
        session.execute(update(Batch).where(col(Batch.id) == batch_id).values(canceled=what.value, paused_reason=None))
        of_batch = [col(Job.batch_id) == batch_id]
        waiting = move_all(session, of_batch, [JobState.PENDING, JobState.QUEUED], JobState.CANCELED,  # type: ignore[arg-type]
                           error=reason, credits=None, lease_until=None)  # fmt: skip
        ended: list[int] = []
        tasks: list[tuple[str, str]] = []
        if running:
            ended = move_all(session, of_batch, [JobState.RUNNING], JobState.CANCELED, error=reason)  # type: ignore[arg-type]
            if ended:
                stopped = session.execute(
                    update(ProviderTask)
                    .where(col(ProviderTask.job_id).in_(ended), col(ProviderTask.state) == TaskState.RUNNING.value)
                    .values(state=TaskState.FAILED.value, error=reason, finished_at=utcnow())
                    .returning(col(ProviderTask.account), col(ProviderTask.remote_id))
                )
                tasks = [(account, remote_id) for account, remote_id in stopped]
    return Canceled(waiting=len(waiting), running=len(ended), tasks=tuple(tasks))


CANCELED_REASON = "canceled (`genq cancel`)"


def admissible(session: Session, job_ids: Collection[int]) -> dict[int, str | None]:
    """For each job: None when its batch may be sent now, else why not (``paused`` or ``canceled``).

    A batch paused at its budget still sends what was claimed before: those jobs fit the budget."""
    rows = session.exec(
        select(Job.id, Batch.paused_reason, Batch.canceled)
        .join(Batch, col(Batch.id) == col(Job.batch_id))
        .where(col(Job.id).in_(job_ids))
    ).all()
    return {job_id: holds_back(paused, canceled) for job_id, paused, canceled in rows if job_id is not None}


def holds_back(paused_reason: str | None, canceled: str | None) -> str | None:
    """Why a batch in this standing sends nothing now (``paused`` or ``canceled``), or None."""
    return "canceled" if canceled else "paused" if paused_reason and paused_reason != BUDGET_REACHED else None


def canceled_running(session: Session, job_ids: Collection[int]) -> set[int]:
    """Those of the jobs whose batch was canceled with its running tasks (``genq cancel --running``)."""
    rows = session.exec(
        select(Job.id)
        .join(Batch, col(Batch.id) == col(Job.batch_id))
        .where(col(Job.id).in_(job_ids), col(Batch.canceled) == Cancel.RUNNING.value)
    ).all()
    return {job_id for job_id in rows if job_id is not None}


def batch_credits(session: Session, batch_ids: Collection[int], *, sent_only: bool = False) -> dict[int, int]:
    """Credits each batch's jobs hold: spent, and (unless ``sent_only``) claimed but not yet sent."""
    if not batch_ids:
        return {}
    query = select(Job.batch_id, func.sum(col(Job.credits))).where(
        col(Job.batch_id).in_(batch_ids), col(Job.credits).is_not(None)
    )
    if sent_only:
        query = query.where(col(Job.state).not_in(UNSENT))
    rows = session.exec(query.group_by(col(Job.batch_id))).all()
    return {batch_id: int(total or 0) for batch_id, total in rows}


def start_of_day(now: datetime | None = None) -> datetime:
    """Midnight UTC of today: an account's ``daily_credits`` count from it."""
    now = now or utcnow()
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def credits_today(session: Session, accounts: Collection[str], *, sent_only: bool = False) -> dict[str, int]:
    """Credits each account's jobs hold today: sent since midnight UTC, and (unless ``sent_only``)
    claimed for it and not yet sent."""
    if not accounts:
        return {}
    today = col(Job.sent_at) >= start_of_day()
    held = today if sent_only else or_(today, col(Job.state).in_((JobState.QUEUED.value, JobState.SUBMITTING.value)))
    rows = session.exec(
        select(Job.account, func.sum(col(Job.credits)))
        .where(col(Job.account).in_(accounts), col(Job.credits).is_not(None), held)
        .group_by(col(Job.account))
    ).all()
    return {account: int(total or 0) for account, total in rows if account is not None}


def pause_account(engine: Engine, account: str, *, seconds: float | None = None, reason: str = "") -> datetime | None:
    """Take an account out of rotation for ``seconds`` (until resumed when None); returns until when."""
    until = utcnow() + timedelta(seconds=seconds) if seconds is not None else None
    values = {"account": account, "until": until, "reason": reason or PAUSED_BY_HAND, "paused_at": utcnow()}
    with session_scope(engine) as session:
        insert = upsert_insert(session)(AccountPause).values(**values)
        session.execute(insert.on_conflict_do_update(index_elements=["account"], set_=values))
        _unqueue(session, [col(Job.account) == account])
    return until


def resume_account(engine: Engine, account: str) -> bool:
    """Put the account back in rotation; whether it was paused by hand."""
    with session_scope(engine) as session:
        removed = session.execute(delete(AccountPause).where(col(AccountPause.account) == account))
        return bool(removed.rowcount)  # type: ignore[attr-defined]


def account_pauses(session: Session) -> dict[str, AccountPause]:
    """The accounts out of rotation by hand now (a pause whose time ran out is over)."""
    now = utcnow()
    pauses = session.exec(select(AccountPause)).all()
    return {pause.account: pause for pause in pauses if pause.until is None or pause.until > now}
