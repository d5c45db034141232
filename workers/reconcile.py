"""The reconciler: finds jobs whose wake-up message was lost, from the database alone.

Celery messages are only wake-ups. A job that has sat ``queued`` or ``collecting`` past
``stale_after`` gets its message again; one left ``submitting`` (the worker died during the call) may
have been paid for and becomes ``uncertain``. An uncertain job is failed with that reason rather than
sent again blindly; it is counted and shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import col, select

from jobs.db import session_scope
from jobs.lifecycle import JobState, move
from jobs.models import Batch, Job, utcnow
from workers.finish import finish_batch_if_done
from workers.runtime import Runtime

UNCERTAIN_REASON = "the answer to its submit was lost; not sent again, so as not to pay twice"


@dataclass
class Reconciled:
    resubmit: list[int] = field(default_factory=list)
    recollect: list[int] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)
    finished_batches: list[int] = field(default_factory=list)


def reconcile(runtime: Runtime, stale_after: float | None = None) -> Reconciled:
    """One pass. ``stale_after`` (seconds) defaults to the setting; 0 takes every job in those states,
    which is right just after a fresh broker was started."""
    stale = runtime.settings.stale_after if stale_after is None else stale_after
    now = utcnow()
    cutoff = now - timedelta(seconds=stale)
    found = Reconciled()
    with session_scope(runtime.engine) as session:
        for state, bucket in ((JobState.QUEUED, found.resubmit), (JobState.COLLECTING, found.recollect)):
            touched = session.execute(
                update(Job)
                .where(col(Job.state) == state.value, col(Job.updated_at) <= cutoff)
                .values(updated_at=now)
                .returning(col(Job.id))
            )
            bucket.extend(row[0] for row in touched)
        lost = session.exec(
            select(Job.id).where(col(Job.state) == JobState.SUBMITTING.value, col(Job.updated_at) <= cutoff)
        ).all()
        for job_id in lost:
            if job_id is not None and move(session, job_id, JobState.SUBMITTING, JobState.UNCERTAIN):
                found.uncertain.append(job_id)
        for job_id in session.exec(select(Job.id).where(col(Job.state) == JobState.UNCERTAIN.value)).all():
            if job_id is not None:
                move(session, job_id, JobState.UNCERTAIN, JobState.FAILED, error=UNCERTAIN_REASON)
        running = session.exec(select(Batch.id).where(col(Batch.state) == "running")).all()
    for batch_id in running:
        if batch_id is not None and finish_batch_if_done(runtime, batch_id):
            found.finished_batches.append(batch_id)
    return found
