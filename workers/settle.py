"""Lost answers: a job whose submit answer was lost is looked up at the provider and adopted, or the
batch's ``on_uncertain`` policy decides.

A lost answer (a time-out after the request left, a cut body, a gateway's page, a worker that died
mid-call) leaves the job ``uncertain``: the provider may have taken and billed the job. Where the
provider keeps a record of past submits (gencraft's history, qtpixel's task and batch lists), the
record is searched, within the time around the submit, for a submission of the same prompt and
settings that no other job of the account has taken; found, it is the job's: its tasks are polled
(or its pictures collected) as usual. Not found within ``settle_for`` after the submit's lease, or
where the provider keeps no record, the policy decides: ``fail`` (never pay twice) or ``resubmit``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from sqlalchemy import update
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.lifecycle import JobState, TaskState, UncertainPolicy, move
from jobs.models import Batch, Job, JobEvent, ProviderTask, utcnow
from jobs.spec import JobSpec
from workers.providers import adapter_class
from workers.providers.base import Finished, ProviderError, Sighting, Started
from workers.runtime import Runtime
from workers.submission import record_submitted

LOOK_AGAIN = 10.0
"""Seconds between two searches of the provider's record for one job."""
SLACK = 30.0
"""Seconds either side of a submit's time in which the provider's record is searched (its clock and
ours may differ, and a submission is stamped when the provider takes it)."""


log = logging.getLogger(__name__)


class Settled(Enum):
    ADOPTED = "adopted"
    """Found at the provider: the job polls or collects what it made."""
    WAITING = "waiting"
    """Not settled yet: looked up again later."""
    RESUBMITTED = "resubmitted"
    FAILED = "failed"
    GONE = "gone"
    """Not uncertain any more (settled elsewhere)."""


@dataclass(frozen=True)
class Outcome:
    settled: Settled
    collect: bool = False
    """The adopted submission's pictures are all made: collect the job now."""


def settle(runtime: Runtime, job_id: int) -> Outcome:
    """One step for one uncertain job."""
    with Session(runtime.engine) as session:
        job = session.get(Job, job_id)
        batch = session.get(Batch, job.batch_id) if job is not None else None
    if job is None or batch is None or job.state != JobState.UNCERTAIN:
        return Outcome(Settled.GONE)
    account = runtime.accounts.get(job.account or "")
    adapter = adapter_class(job.provider)
    now = utcnow()
    searched_until = (job.lease_until or job.sent_at or now) + timedelta(seconds=runtime.settings.settle_for)
    if account is not None and adapter.keeps_record and job.sent_at is not None:
        if job.adopted is not None:
            return _await_pictures(runtime, job)
        if now < searched_until:
            return _search(runtime, job)
    return _apply_policy(runtime, job, UncertainPolicy(batch.on_uncertain))


def _search(runtime: Runtime, job: Job) -> Outcome:
    assert job.id is not None and job.account is not None and job.sent_at is not None
    account = runtime.accounts[job.account]
    provider = runtime.provider(account.name)
    if provider.polls_count_against_limit and runtime.limiter.acquire(account.name, account.rpm) > 0:
        return Outcome(Settled.WAITING)
    since = job.sent_at - timedelta(seconds=SLACK)
    until = (job.lease_until or utcnow()) + timedelta(seconds=SLACK)
    try:
        sightings = provider.find_submissions(JobSpec.model_validate(job.spec), since, until)
    except ProviderError as error:
        log.info("job %s: the provider's record could not be read (%s); looked up again later", job.id, error)
        return Outcome(Settled.WAITING)
    sighting = _unclaimed(runtime, job, sightings)
    if sighting is None:
        return Outcome(Settled.WAITING)
    return _adopt(runtime, job, sighting)


def _unclaimed(runtime: Runtime, job: Job, sightings: list[Sighting]) -> Sighting | None:
    """The oldest sighting no other job of the account holds: not adopted by one, none of its tasks
    or pictures known as another's. While another job of the same prompt sent around the same time
    still runs with nothing to tell its submission by (gencraft's history names no task ids, and its
    pictures are not made yet), nothing is taken: it might be that job's."""
    if not sightings:
        return None
    window = (job.sent_at or utcnow()) - timedelta(seconds=SLACK)
    remote_ids = [task_id for sighting in sightings for task_id in sighting.task_ids]
    with Session(runtime.engine) as session:
        adopted = set(
            session.exec(
                select(Job.adopted).where(
                    col(Job.account) == job.account, col(Job.adopted).is_not(None), col(Job.id) != job.id
                )
            ).all()
        )
        known_tasks = set(
            session.exec(
                select(ProviderTask.remote_id).where(
                    col(ProviderTask.account) == job.account, col(ProviderTask.remote_id).in_(remote_ids)
                )
            ).all()
            if remote_ids
            else ()
        )
        known_images = {
            image["url"]
            for images in session.exec(
                select(ProviderTask.images).where(
                    col(ProviderTask.account) == job.account, col(ProviderTask.submitted_at) >= window
                )
            ).all()
            for image in images
        }
    free = [
        s
        for s in sightings
        if s.remote_id not in adopted
        and not known_tasks.intersection(s.task_ids)
        and not known_images.intersection(image.url for image in s.images)
    ]
    if free and not free[0].task_ids and _undecided_rivals(runtime, job, str(job.spec.get("prompt"))):
        return None
    return free[0] if free else None


def _undecided_rivals(runtime: Runtime, job: Job, prompt: str) -> bool:
    """Whether another job of the account with this prompt, sent around the same time, still runs
    without pictures: its submission cannot yet be told from this one's in a record without task ids."""
    window = (job.sent_at or utcnow()) - timedelta(seconds=SLACK)
    with Session(runtime.engine) as session:
        candidates = session.exec(
            select(Job.id, Job.spec).where(
                col(Job.account) == job.account,
                col(Job.id) != job.id,
                col(Job.state) == JobState.RUNNING.value,
                col(Job.sent_at) >= window,
            )
        ).all()
    return any(spec.get("prompt") == prompt for _, spec in candidates)


def _adopt(runtime: Runtime, job: Job, sighting: Sighting) -> Outcome:
    assert job.id is not None
    with session_scope(runtime.engine) as session:
        claimed = session.execute(
            update(Job)
            .where(col(Job.id) == job.id, col(Job.state) == JobState.UNCERTAIN.value)
            .values(adopted=sighting.remote_id)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return Outcome(Settled.GONE)
        session.add(JobEvent(job_id=job.id, event="adopted", detail=f"found at the provider as {sighting.remote_id}"))
    job = job.model_copy(update={"adopted": sighting.remote_id})
    if sighting.task_ids:
        record_submitted(runtime, job, Started(sighting.task_ids), source=JobState.UNCERTAIN)
        return Outcome(Settled.ADOPTED)
    return _await_pictures(runtime, job, sighting)


def _await_pictures(runtime: Runtime, job: Job, sighting: Sighting | None = None) -> Outcome:
    """An adopted submission that names no tasks (gencraft's history): its pictures are taken once
    every one is made. A record without tasks does not say that one failed, so it is looked up
    again only for as long as pictures of the kind take (ten times the learned 90th percentile, and
    at least ``settle_for``); then the pictures that came are kept and the job fails for the rest."""
    assert job.id is not None and job.adopted is not None
    if sighting is None:
        sighting = _find_again(runtime, job)
    age = (utcnow() - (job.sent_at or utcnow())).total_seconds()
    learned = runtime.timing.first_poll_delay(job.provider, job.spec.get("model"))
    patience = max(10 * learned, runtime.settings.settle_for)
    if sighting is not None and (sighting.complete or (sighting.images and age > patience)):
        collect = record_submitted(runtime, job, Finished(sighting.images), source=JobState.UNCERTAIN)
        if not sighting.complete:
            _missing_pictures(runtime, job, f"found at the provider as {job.adopted}; the rest did not come "
                                            f"in {age:.0f} s")  # fmt: skip
        return Outcome(Settled.ADOPTED, collect=collect)
    if age > patience:
        return _fail(runtime, job, f"found at the provider as {job.adopted}, but no picture came in {age:.0f} s")
    return Outcome(Settled.WAITING)


def _missing_pictures(runtime: Runtime, job: Job, reason: str) -> None:
    """A failed task beside the pictures that came, so the job ends failed with them stored."""
    assert job.id is not None and job.account is not None
    with session_scope(runtime.engine) as session:
        session.add(ProviderTask(job_id=job.id, index=1, account=job.account, provider=job.provider,
                                 remote_id=job.adopted or "", state=TaskState.FAILED.value, error=reason,
                                 finished_at=utcnow()))  # fmt: skip


def _find_again(runtime: Runtime, job: Job) -> Sighting | None:
    assert job.account is not None and job.sent_at is not None
    provider = runtime.provider(job.account)
    since = job.sent_at - timedelta(seconds=SLACK)
    until = (job.lease_until or utcnow()) + timedelta(seconds=SLACK)
    try:
        sightings = provider.find_submissions(JobSpec.model_validate(job.spec), since, until)
    except ProviderError:
        return None
    return next((s for s in sightings if s.remote_id == job.adopted), None)


def _apply_policy(runtime: Runtime, job: Job, policy: UncertainPolicy) -> Outcome:
    assert job.id is not None
    cause = job.error or "the answer to its submit was lost"
    where = "not found at the provider" if adapter_class(job.provider).keeps_record else "the provider cannot tell"
    if policy is UncertainPolicy.RESUBMIT and job.resubmits < runtime.settings.max_resubmits:
        with session_scope(runtime.engine) as session:
            moved = move(
                session, job.id, JobState.UNCERTAIN, JobState.PENDING,
                account=job.pinned_account, resubmits=job.resubmits + 1, holder=None, lease_until=None,
            )  # fmt: skip
            if moved:
                session.add(JobEvent(job_id=job.id, event="resubmitted", detail=f"{where}; on_uncertain: resubmit"))
        return Outcome(Settled.RESUBMITTED if moved else Settled.GONE)
    why = "on_uncertain: fail" if policy is UncertainPolicy.FAIL else f"resubmitted {job.resubmits} times already"
    return _fail(runtime, job, f"{cause}; {where}; not sent again ({why})")


def _fail(runtime: Runtime, job: Job, reason: str) -> Outcome:
    assert job.id is not None
    with session_scope(runtime.engine) as session:
        moved = move(session, job.id, JobState.UNCERTAIN, JobState.FAILED, error=reason, holder=None, lease_until=None)
        if moved:
            session.add(JobEvent(job_id=job.id, event="failed", detail=reason))
    return Outcome(Settled.FAILED if moved else Settled.GONE)
