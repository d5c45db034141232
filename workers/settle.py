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
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.lifecycle import JobState, TaskState, UncertainPolicy, move
from jobs.models import Batch, Job, JobEvent, ProviderTask, utcnow
from jobs.spec import JobSpec
from workers.polling import may_read
from workers.providers import adapter_class
from workers.providers.base import ProviderError, RateLimited, Sighting
from workers.runtime import Runtime

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
    if may_read(runtime, account, provider, kind="other") > 0:
        return Outcome(Settled.WAITING)
    since = job.sent_at - timedelta(seconds=SLACK)
    until = (job.lease_until or utcnow()) + timedelta(seconds=SLACK)
    try:
        sightings = provider.find_submissions(JobSpec.model_validate(job.spec), since, until)
    except ProviderError as error:
        log.info("job %s: the provider's record could not be read (%s); looked up again later", job.id, error)
        if isinstance(error, RateLimited):
            # A 429 to a lookup is the key's as much as one to a submit: every request of it waits.
            runtime.limiter.pause(account.name, error.retry_after, "rate limited by the provider (429)")
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
    if free and _undecided_rivals(runtime, job, str(job.spec.get("prompt")), taskless=not free[0].task_ids):
        return None
    return free[0] if free else None


def _undecided_rivals(runtime: Runtime, job: Job, prompt: str, *, taskless: bool) -> bool:
    """Whether another job of the account with this prompt, sent around the same time, may own the
    sighting without our knowing yet: one whose submit is under way (its answer not recorded), or,
    in a record without task ids, one still running without pictures."""
    window = (job.sent_at or utcnow()) - timedelta(seconds=SLACK)
    states = [JobState.QUEUED.value, JobState.SUBMITTING.value] + ([JobState.RUNNING.value] if taskless else [])
    with Session(runtime.engine) as session:
        candidates = session.exec(
            select(Job.id, Job.spec).where(
                col(Job.account) == job.account,
                col(Job.id) != job.id,
                col(Job.state).in_(states),
                col(Job.sent_at) >= window,
            )
        ).all()
    return any(spec.get("prompt") == prompt for _, spec in candidates)


def _adopt(runtime: Runtime, job: Job, sighting: Sighting) -> Outcome:
    """Take the sighting as the job's. Claiming it and recording what it made is one transaction,
    and two jobs cannot claim one submission (a unique index on account and ``adopted``)."""
    if sighting.task_ids or sighting.complete:
        return _take(runtime, job, sighting)
    assert job.id is not None
    try:
        with session_scope(runtime.engine) as session:
            if not _claim(session, job, sighting):
                return Outcome(Settled.GONE)
    except IntegrityError:
        return Outcome(Settled.WAITING)  # another job took it first: the search goes on
    return Outcome(Settled.WAITING)  # found, its pictures not all made yet: ``_await_pictures``


def _claim(session: Session, job: Job, sighting: Sighting) -> bool:
    claimed = session.execute(
        update(Job)
        .where(col(Job.id) == job.id, col(Job.state) == JobState.UNCERTAIN.value)
        .values(adopted=sighting.remote_id)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.add(JobEvent(job_id=job.id or 0, event="adopted", detail=f"found at the provider as {sighting.remote_id}"))
    return True


def _take(runtime: Runtime, job: Job, sighting: Sighting, *, missing: str | None = None) -> Outcome:
    """Claim the sighting (if not yet) and record its tasks to poll, or its pictures to collect (with
    a failed task for the ones that never came, so the job ends failed with them stored)."""
    assert job.id is not None and job.account is not None
    now = utcnow()
    submitted = job.sent_at or now

    def task(index: int, remote_id: str, **values: Any) -> ProviderTask:
        assert job.id is not None and job.account is not None
        return ProviderTask(job_id=job.id, index=index, account=job.account, provider=job.provider,
                            remote_id=remote_id, submitted_at=submitted, **values)  # fmt: skip

    if sighting.task_ids:
        tasks = [task(index, remote_id, next_poll_at=now) for index, remote_id in enumerate(sighting.task_ids)]
        target = JobState.RUNNING
    else:
        images = [{"url": image.url} for image in sighting.images]
        tasks = [task(0, sighting.remote_id, state=TaskState.SUCCEEDED.value, images=images, finished_at=now)]
        if missing is not None:
            tasks.append(task(1, sighting.remote_id, state=TaskState.FAILED.value, error=missing, finished_at=now))
        target = JobState.COLLECTING
    try:
        with session_scope(runtime.engine) as session:
            if job.adopted != sighting.remote_id and not _claim(session, job, sighting):
                return Outcome(Settled.GONE)
            if not move(session, job.id, JobState.UNCERTAIN, target, error=missing, holder=None):
                session.rollback()
                return Outcome(Settled.GONE)
            session.add_all(tasks)
    except IntegrityError:
        return Outcome(Settled.WAITING)
    return Outcome(Settled.ADOPTED, collect=target is JobState.COLLECTING)


def _await_pictures(runtime: Runtime, job: Job) -> Outcome:
    """An adopted submission that names no tasks (gencraft's history): its pictures are taken once
    every one is made. A record without tasks does not say that one failed, so it is looked up
    again only for as long as pictures of the kind take (ten times the learned 95th percentile, and
    at least ``settle_for``); then the pictures that came are kept and the job fails for the rest."""
    assert job.id is not None and job.adopted is not None
    sighting = _find_again(runtime, job)
    age = (utcnow() - (job.sent_at or utcnow())).total_seconds()
    learned = runtime.timing.first_poll_delay(job.provider, job.spec.get("model"))
    patience = max(10 * learned, runtime.settings.settle_for)
    if sighting is not None and (sighting.task_ids or sighting.complete):
        return _take(runtime, job, sighting)
    if sighting is not None and sighting.images and age > patience:
        made, asked = len(sighting.images), max(sighting.expected, len(sighting.images) + 1)
        missing = f"{asked - made} of {asked} pictures of {job.adopted} did not come in {age:.0f} s"
        return _take(runtime, job, sighting, missing=missing)
    if age > patience:
        return _fail(runtime, job, f"found at the provider as {job.adopted}, but no picture came in {age:.0f} s")
    return Outcome(Settled.WAITING)


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
