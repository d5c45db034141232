"""The reconciler: finds, from the database alone, jobs that would otherwise wait forever.

Celery messages are only wake-ups. One pass:
- a job ``queued`` past its lease gets its submit message again (a duplicate finds it moved);
- a job ``submitting`` whose holder is known dead, or past its lease (its provider's call time-out
  and a margin), lost its answer: it becomes ``uncertain`` (it may have been paid for);
- a job ``collecting`` whose holder is dead, or that sat past ``stale_after``, is collected again;
- a job ``running`` whose every provider task has ended is moved on, and one whose account is no
  longer configured fails;
- ``uncertain`` jobs are handed to ``settle`` (looked up at the provider, or the batch's policy);
- batches whose every job is final are finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, or_, update
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.lifecycle import BatchState, JobState, TaskState, move
from jobs.models import Batch, Job, JobEvent, ProviderTask, utcnow
from workers.finish import finish_batch_if_done
from workers.liveness import dead_holders
from workers.polling import after_tasks
from workers.runtime import Runtime
from workers.settle import LOOK_AGAIN

LOST_IN_FLIGHT = "the worker sending it died mid-call"
NO_ANSWER = "no answer within the lease of its call"


@dataclass
class Reconciled:
    resubmit: list[int] = field(default_factory=list)
    recollect: list[int] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)
    settle: list[int] = field(default_factory=list)
    """Uncertain jobs due to be looked up (or decided by their batch's policy)."""
    failed: list[int] = field(default_factory=list)
    finished_batches: list[int] = field(default_factory=list)


def reconcile(runtime: Runtime, stale_after: float | None = None) -> Reconciled:
    """One pass. ``stale_after`` (seconds) defaults to the setting; 0 takes every job in those
    states whatever its lease, which is right just after a fresh broker was started with no
    worker alive."""
    stale = runtime.settings.stale_after if stale_after is None else stale_after
    now = utcnow()
    found = Reconciled()
    with Session(runtime.engine) as session:
        holders = set(
            session.exec(
                select(Job.holder).where(
                    col(Job.state).in_([JobState.SUBMITTING.value, JobState.COLLECTING.value]),
                    col(Job.holder).is_not(None),
                )
            ).all()
        )
    dead = dead_holders(runtime.redis, {holder for holder in holders if holder}) if holders else set()
    with session_scope(runtime.engine) as session:
        queued_lease = now + timedelta(seconds=runtime.settings.queued_lease)
        found.resubmit = _touch(session, JobState.QUEUED, _expired(now, stale_after, stale), now, lease=queued_lease)
        collect_cutoff = now - timedelta(seconds=stale)
        stale_collect = or_(col(Job.updated_at) <= collect_cutoff, col(Job.holder).in_(dead or [""]))
        found.recollect = _touch(session, JobState.COLLECTING, stale_collect, now)
        found.uncertain = _lost_submits(session, now, stale_after, dead)
        looked_at = col(Job.updated_at) <= now - timedelta(seconds=LOOK_AGAIN)
        found.settle = _touch(session, JobState.UNCERTAIN, looked_at, now)
    _finish_running(runtime, found)
    with Session(runtime.engine) as session:
        running = session.exec(select(Batch.id).where(col(Batch.state) == BatchState.RUNNING.value)).all()
    for batch_id in running:
        if batch_id is not None and finish_batch_if_done(runtime, batch_id):
            found.finished_batches.append(batch_id)
    return found


def _expired(now: datetime, stale_after: float | None, stale: float) -> ColumnElement[bool]:
    """Past its lease; a job with no lease, past ``stale``; every job when ``stale_after`` is 0."""
    if stale_after == 0:
        return col(Job.id).is_not(None)
    return or_(
        col(Job.lease_until) <= now,
        and_(col(Job.lease_until).is_(None), col(Job.updated_at) <= now - timedelta(seconds=stale)),
    )


def _touch(
    session: Session, state: JobState, stale: ColumnElement[bool], now: datetime, *, lease: datetime | None = None
) -> list[int]:
    """The jobs of ``state`` matching ``stale``, marked as looked at now (so the next pass leaves
    them alone while their new wake-up is on its way), with a new ``lease`` where one is given."""
    values: dict[str, object] = {"updated_at": now}
    if state is JobState.COLLECTING:
        values["holder"] = None  # a dead holder's job is sent once, not on every pass until it starts
    if lease is not None:
        values["lease_until"] = lease
    touched = session.execute(
        update(Job).where(col(Job.state) == state.value, stale).values(**values).returning(col(Job.id))
    )
    return [row[0] for row in touched]


def _lost_submits(session: Session, now: datetime, stale_after: float | None, dead: set[str]) -> list[int]:
    taken = [col(Job.holder).in_(dead or [""]), col(Job.lease_until) <= now, col(Job.lease_until).is_(None)]
    if stale_after == 0:
        taken.append(col(Job.id).is_not(None))
    lost = session.exec(
        select(Job.id, Job.holder, Job.lost_answers).where(col(Job.state) == JobState.SUBMITTING.value, or_(*taken))
    ).all()
    moved = []
    for job_id, holder, lost_answers in lost:
        if job_id is None:
            continue
        reason = LOST_IN_FLIGHT if holder in dead else NO_ANSWER
        if move(session, job_id, JobState.SUBMITTING, JobState.UNCERTAIN, error=reason,
                lost_answers=lost_answers + 1, holder=None):  # fmt: skip
            session.add(JobEvent(job_id=job_id, event="answer lost", detail=reason))
            moved.append(job_id)
    return moved


def _finish_running(runtime: Runtime, found: Reconciled) -> None:
    """Running jobs no poll will move: every task ended (a poll that ended the last one died before
    moving the job), or an account that is gone."""
    ended = ~exists().where(col(ProviderTask.job_id) == col(Job.id), col(ProviderTask.state) == TaskState.RUNNING.value)
    with session_scope(runtime.engine) as session:
        rows = session.exec(select(Job.id).where(col(Job.state) == JobState.RUNNING.value, ended).limit(500)).all()
        for job_id in rows:
            if job_id is None:
                continue
            moved_to = after_tasks(session, job_id)
            if moved_to is JobState.COLLECTING:
                found.recollect.append(job_id)
            elif moved_to is JobState.FAILED:
                found.failed.append(job_id)
        orphans = session.exec(
            select(Job.id, Job.account).where(
                col(Job.state) == JobState.RUNNING.value, col(Job.account).not_in(list(runtime.accounts) or [""])
            )
        ).all()
        for job_id, account in orphans:
            if job_id is None:
                continue
            reason = f"account {account} is no longer in the accounts file"
            session.execute(
                update(ProviderTask)
                .where(col(ProviderTask.job_id) == job_id, col(ProviderTask.state) == TaskState.RUNNING.value)
                .values(state=TaskState.FAILED.value, error=reason, finished_at=utcnow())
            )
            # Pictures its other tasks made are still collected; the job then fails for the rest.
            moved_to = after_tasks(session, job_id)
            if moved_to is JobState.COLLECTING:
                found.recollect.append(job_id)
            elif moved_to is JobState.FAILED:
                found.failed.append(job_id)
        stranded = session.exec(
            select(Job.id, Job.pinned_account).where(
                col(Job.state) == JobState.PENDING.value,
                col(Job.pinned_account).is_not(None),
                col(Job.pinned_account).not_in(list(runtime.accounts) or [""]),
            )
        ).all()
        for job_id, pinned in stranded:
            reason = f"pinned to account {pinned}, which is not in the accounts file"
            if job_id is not None and move(session, job_id, JobState.PENDING, JobState.FAILED, error=reason):
                found.failed.append(job_id)
