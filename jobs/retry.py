"""Sending a finished batch's failed rows again, in the same batch, under the same names.

Only the rows asked for move: back to ``pending``, with what their last attempt left (its provider
tasks, any pictures of a failed sprite, the reason) cleared, and a line in each job's history saying
so. Succeeded jobs and their pictures are untouched. The batch runs again until every job is final,
when its results, sheets and report are written anew. One transaction: a retry happens whole or not.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, delete, update
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.errors import GenqError, NotFound
from jobs.models import Asset, Batch, Job, JobEvent, ProviderTask, utcnow
from jobs.spec import BatchSpec, JobSpec
from jobs.states import BatchState, JobState


class NothingToRetry(GenqError):
    """The batch has no row of the kind asked for (or is still running)."""


def rows_to_retry(engine: Engine, batch_id: int, *, failed: bool = True, uncertain: bool = False) -> list[Job]:
    """The batch's jobs to send again: ``failed`` every failed row, ``uncertain`` those whose submit
    answer was lost (whatever became of them after); in file order."""
    with Session(engine) as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"no batch {batch_id}")
        if batch.state == BatchState.RUNNING:
            raise NothingToRetry(f"batch {batch_id} is still running; retry it once it has ended")
        query = select(Job).where(col(Job.batch_id) == batch_id)
        kinds = []
        if failed:
            kinds.append(col(Job.state) == JobState.FAILED.value)
        if uncertain:
            kinds.append((col(Job.lost_answers) > 0) & (col(Job.state) != JobState.SUCCEEDED.value))
        if not kinds:
            return []
        condition = kinds[0] if len(kinds) == 1 else kinds[0] | kinds[1]
        return list(session.exec(query.where(condition).order_by(col(Job.seq))).all())


def retry_spec(batch: Batch, jobs: Sequence[Job]) -> BatchSpec:
    """The rows as a batch of their own, for ``genq plan`` to say what the retry will cost."""
    return BatchSpec(
        name=batch.name,
        source=batch.source,
        content_hash=batch.content_hash,
        jobs=tuple(JobSpec.model_validate(job.spec) for job in jobs),
        lines=tuple(job.line for job in jobs),
    )


def retry_rows(engine: Engine, batch_id: int, job_ids: Sequence[int]) -> int:
    """Send these jobs again: each goes back to ``pending`` as it was when the batch was submitted;
    the batch runs again. Returns how many moved (a job that is no longer final is left alone)."""
    if not job_ids:
        return 0
    now = utcnow()
    with session_scope(engine) as session:
        final = (JobState.FAILED.value, JobState.CANCELED.value, JobState.SUCCEEDED.value)
        ids = list(
            session.exec(select(Job.id).where(col(Job.id).in_(job_ids), col(Job.state).in_(final))).all()
        )
        if not ids:
            return 0
        for job in session.exec(select(Job).where(col(Job.id).in_(ids))).all():
            session.add(JobEvent(job_id=job.id or 0, event="retried", detail=f"was {job.state}: {job.error or ''}"))
        session.execute(delete(Asset).where(col(Asset.job_id).in_(ids)))
        session.execute(delete(ProviderTask).where(col(ProviderTask.job_id).in_(ids)))
        session.execute(
            update(Job)
            .where(col(Job.id).in_(ids))
            .values(
                state=JobState.PENDING.value, error=None, account=Job.pinned_account, attempts=0, holder=None,
                lease_until=None, sent_at=None, lost_answers=0, adopted=None, rotations=0, resubmits=0,
                updated_at=now,
            )
        )  # fmt: skip
        session.execute(
            update(Batch)
            .where(col(Batch.id) == batch_id)
            .values(state=BatchState.RUNNING.value, finished_at=None)
        )
    return len(ids)
