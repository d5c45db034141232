"""Submit: one paid call for one queued job, sent at most once by us.

The job first moves ``queued -> submitting`` with a compare-and-set, naming its holder (this worker
process) and a lease as long as the provider's call time-out plus a margin: a second delivery of the
same message finds it moved and sends nothing, and the reconciler leaves a live call alone until its
lease runs out (or its holder is known dead). Then the rate-limit token is taken, right before the
call; a key with no allowance left puts the job back to ``queued`` to be sent again when a request
frees. What happens after a failed call is decided by ``next_step``, keyed by the outcome's class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from functools import partial
from typing import Any

from sqlmodel import Session, col, select

from jobs.control import CANCELED_REASON, account_pauses, admissible
from jobs.db import session_scope, upsert_insert, while_the_database_is_back
from jobs.errors import RedisUnavailable
from jobs.lifecycle import JobState, TaskState, move
from jobs.models import RATE_LIMITED, AccountBalance, Job, JobEvent, ProviderTask, utcnow
from jobs.rediscalls import talking_to_redis
from jobs.spec import JobSpec
from workers.liveness import holder_id
from workers.providers.base import (
    AnswerLost,
    AnswerTooLarge,
    BadCredentials,
    Finished,
    InvalidRequest,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Refused,
    Started,
    Submitted,
    Transient,
    Unreadable,
    decide,
)
from workers.runtime import Runtime

log = logging.getLogger(__name__)


class NextStep(Enum):
    WAIT = "wait"
    """Back to queued on the same account, sent again once the account's pause is over."""
    RETRY = "retry"
    """Back to pending for admission to send again, until the attempts run out."""
    ROTATE = "rotate"
    """The account is out of rotation (its key refused, its balance empty): the job goes back to
    pending for another account, untouched by attempts, and the account pauses for the fleet."""
    FAIL = "fail"
    UNCERTAIN = "uncertain"
    """The call may have been paid for: never sent again blindly."""


NEXT_STEP: dict[type[ProviderError], NextStep] = {
    ProviderError: NextStep.FAIL,
    RateLimited: NextStep.WAIT,
    Transient: NextStep.RETRY,
    AnswerLost: NextStep.UNCERTAIN,
    AnswerTooLarge: NextStep.UNCERTAIN,
    Unreadable: NextStep.RETRY,
    InvalidRequest: NextStep.FAIL,
    Refused: NextStep.FAIL,
    BadCredentials: NextStep.ROTATE,
    OutOfCredits: NextStep.ROTATE,
}

ROTATION_REASONS: dict[type[ProviderError], str] = {
    ProviderError: "the account cannot take jobs now",
    BadCredentials: "the provider refused its key",
    OutOfCredits: "out of credits",
}
"""Why an account left the rotation, as its pause says; looked up through the MRO, like ``NEXT_STEP``."""


def next_step(error: ProviderError) -> NextStep:
    return decide(NEXT_STEP, error)


@dataclass(frozen=True)
class AfterSubmit:
    """What the submit task does next."""

    wait: float | None = None
    """Send the same message again after this many seconds (the allowance is spent or paused)."""
    collect: bool = False
    """The pictures came with the answer (a synchronous provider): collect them now."""


def submit_job(runtime: Runtime, job_id: int) -> AfterSubmit:
    """Send the job if it is still queued, and record what the provider answered."""
    with Session(runtime.engine) as session:
        job = session.get(Job, job_id)
    if job is None or job.state != JobState.QUEUED or job.account is None:
        return AfterSubmit()
    account = runtime.accounts.get(job.account)
    if account is None or not _may_send(runtime, job):
        return AfterSubmit()
    provider = runtime.provider(account.name)
    now = utcnow()
    spec = JobSpec.model_validate(job.spec)
    lease = now + timedelta(seconds=provider.submit_timeout(spec) + runtime.settings.lease_margin)
    with session_scope(runtime.engine) as session:
        # ``sent_at`` is written now, a Redis call before the request leaves, not in a write of its own.
        claimed = move(
            session, job_id, JobState.QUEUED, JobState.SUBMITTING, holder=holder_id(), lease_until=lease, sent_at=now
        )
    if not claimed:
        return AfterSubmit()

    try:
        with talking_to_redis("taking a rate-limit token"):
            wait = runtime.limiter.acquire(account.name, account.rpm, kind="submit")
    except RedisUnavailable:
        # Nothing was sent: the job goes back as it came, for the reconciler to send again.
        with session_scope(runtime.engine) as session:
            move(session, job_id, JobState.SUBMITTING, JobState.QUEUED, holder=None, lease_until=utcnow())
        raise
    if wait > 0:
        return _not_now(runtime, job, wait)
    try:
        submitted = provider.submit(spec)
    except ProviderError as error:
        return AfterSubmit(wait=while_the_database_is_back(partial(_after_error, runtime, job, error)))
    return AfterSubmit(collect=while_the_database_is_back(partial(record_submitted, runtime, job, submitted)))


def _may_send(runtime: Runtime, job: Job) -> bool:
    """Whether a queued job may be sent now. Claimed before its batch was paused or canceled, or its
    account paused by hand (or dropped from the accounts file), it is not sent: it goes back to
    waiting, or is canceled with its batch."""
    assert job.id is not None and job.account is not None
    with session_scope(runtime.engine) as session:
        held = admissible(session, [job.id]).get(job.id)
        if held == "canceled":
            move(session, job.id, JobState.QUEUED, JobState.CANCELED, error=CANCELED_REASON, credits=None)
            return False
        if held is not None or job.account not in runtime.accounts or job.account in account_pauses(session):
            move(session, job.id, JobState.QUEUED, JobState.PENDING, account=job.pinned_account, credits=None)
            return False
    return True


def _not_now(runtime: Runtime, job: Job, wait: float) -> AfterSubmit:
    """The key has no request to spare: back to queued, leased for the wait, or back to pending for
    another account when this one is out of rotation."""
    assert job.id is not None
    with talking_to_redis("reading the account's standing"):
        out_of_rotation = runtime.limiter.standing(job.account or "").out_of_rotation
    with session_scope(runtime.engine) as session:
        if out_of_rotation:
            move(session, job.id, JobState.SUBMITTING, JobState.PENDING, account=job.pinned_account, holder=None,
                 credits=None)  # fmt: skip
            return AfterSubmit()
        lease = utcnow() + timedelta(seconds=wait + runtime.settings.queued_lease)
        move(session, job.id, JobState.SUBMITTING, JobState.QUEUED, holder=None, lease_until=lease)
    return AfterSubmit(wait=wait)


def record_submitted(
    runtime: Runtime, job: Job, submitted: Submitted, *, source: JobState = JobState.SUBMITTING
) -> bool:
    """Record the provider tasks a submit started; True when they are finished already.

    An answer that comes after its job was taken for lost (its lease ran out) is still the job's: it
    is taken from ``uncertain`` too, as long as nothing else settled the job meanwhile.
    """
    assert job.id is not None and job.account is not None
    now = utcnow()
    model = job.spec.get("model")
    first_poll = now + timedelta(seconds=runtime.timing.first_poll_delay(job.provider, model))
    if isinstance(submitted, Finished):
        target = JobState.COLLECTING
        images = [{"url": image.url} for image in submitted.images]
        tasks = [
            _task(job, now, index=0, remote_id="", state=TaskState.SUCCEEDED.value, images=images, finished_at=now)
        ]
    else:
        target = JobState.RUNNING
        tasks = [
            _task(job, now, index=index, remote_id=remote_id, next_poll_at=first_poll, poll_due_at=first_poll)
            for index, remote_id in enumerate(submitted.task_ids)
        ]
    done: dict[str, Any] = {"error": None, "holder": None, "lease_until": None}
    if isinstance(submitted, Started) and submitted.credits_used is not None:
        done["credits"] = submitted.credits_used
    with session_scope(runtime.engine) as session:
        moved = move(session, job.id, source, target, **done)
        if not moved and source is JobState.SUBMITTING:
            moved = move(session, job.id, JobState.UNCERTAIN, target, **done)
            if moved:
                session.add(JobEvent(job_id=job.id, event="answer arrived late", detail="taken as the job's after all"))
        if not moved:
            # Written already by an attempt whose commit was not acknowledged (the database restarting)?
            stored = session.exec(select(Job.state).where(col(Job.id) == job.id)).first()
            has_tasks = session.exec(select(ProviderTask.id).where(col(ProviderTask.job_id) == job.id)).first()
            return stored == target and has_tasks is not None and target is JobState.COLLECTING
        session.add_all(tasks)
    if isinstance(submitted, Started) and submitted.credits_remaining is not None:
        with session_scope(runtime.engine) as session:
            record_balance(session, job.account, job.provider, submitted.credits_remaining)
    return target is JobState.COLLECTING


def _task(job: Job, now: datetime, **values: Any) -> ProviderTask:
    assert job.id is not None and job.account is not None
    return ProviderTask(job_id=job.id, account=job.account, provider=job.provider, submitted_at=now, **values)


def record_balance(session: Session, account: str, provider: str, credits: float) -> None:
    """An upsert: workers answered at the same moment for one account must not collide on its row.

    It runs after the job's own record is committed, so a balance can never cost a job its tasks.
    """
    values = {"account": account, "provider": provider, "credits_remaining": credits, "updated_at": utcnow()}
    insert = upsert_insert(session)(AccountBalance).values(**values)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["account"],
            set_={"credits_remaining": credits, "updated_at": values["updated_at"]},
        )
    )


def _pause(runtime: Runtime, account: str, seconds: float, why: str, *, out_of_rotation: bool = False) -> None:
    """Pause the account for the fleet; a Redis that does not answer costs the pause, not the job."""
    try:
        with talking_to_redis(f"pausing account {account}"):
            runtime.limiter.pause(account, seconds, why, out_of_rotation=out_of_rotation)
    except RedisUnavailable as error:
        log.warning("account %s not paused (%s): %s", account, why, error)


def _after_error(runtime: Runtime, job: Job, error: ProviderError) -> float | None:
    assert job.id is not None and job.account is not None
    step = next_step(error)
    reason = f"{job.account}: {error}"
    wait = f"; Retry-After {error.retry_after:g} s" if isinstance(error, RateLimited) else ""
    log.warning("submit of job %s on %s: %s (%s%s): %s", job.id, job.account, type(error).__name__,
                step.value, wait, error)  # fmt: skip
    released: dict[str, Any] = {"holder": None, "lease_until": None, "error": reason}
    with session_scope(runtime.engine) as session:
        if step is NextStep.WAIT:
            assert isinstance(error, RateLimited)
            _pause(runtime, job.account, error.retry_after, "rate limited by the provider (429)")
            session.add(JobEvent(job_id=job.id, event=RATE_LIMITED, detail=f"{job.account}: submit{wait}"))
            move(session, job.id, JobState.SUBMITTING, JobState.QUEUED, **released)
            return error.retry_after
        if step is NextStep.ROTATE:
            why = decide(ROTATION_REASONS, error)
            _pause(runtime, job.account, runtime.settings.rotation_pause, why, out_of_rotation=True)
            if job.rotations + 1 >= runtime.settings.max_rotations:
                released["error"] = f"{reason} ({job.rotations + 1} times; no account took it)"
                move(session, job.id, JobState.SUBMITTING, JobState.FAILED, credits=0, **released)
                return None
            move(session, job.id, JobState.SUBMITTING, JobState.PENDING, account=job.pinned_account,
                 rotations=job.rotations + 1, credits=None, **released)  # fmt: skip
            return None
        if step is NextStep.RETRY and job.attempts + 1 < runtime.settings.submit_attempts:
            move(
                session,
                job.id,
                JobState.SUBMITTING,
                JobState.PENDING,
                account=job.pinned_account,
                attempts=job.attempts + 1,
                credits=None,
                **released,
            )
        elif step is NextStep.UNCERTAIN:
            # The lease is kept: it bounds the time in which the provider's record is searched.
            if move(session, job.id, JobState.SUBMITTING, JobState.UNCERTAIN, lost_answers=job.lost_answers + 1,
                    holder=None, error=reason):  # fmt: skip
                session.add(JobEvent(job_id=job.id, event="answer lost", detail=reason))
        else:
            # The provider's own error said nothing was started: nothing was charged.
            move(session, job.id, JobState.SUBMITTING, JobState.FAILED, attempts=job.attempts + 1, credits=0,
                 **released)  # fmt: skip
    return None
