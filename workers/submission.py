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

from sqlalchemy import Table, bindparam, func, insert, or_, select
from sqlmodel import Session

from jobs.control import CANCELED_REASON, holds_back
from jobs.db import session_scope, transaction, upsert_insert, while_the_database_is_back
from jobs.errors import RedisUnavailable
from jobs.lifecycle import JOBS, JobState, TaskState, move
from jobs.models import RATE_LIMITED, AccountBalance, AccountPause, Batch, JobEvent, ProviderTask, utcnow
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
    ended: bool = False
    """The job may have ended here (failed, canceled), and its batch with it. A job sent on its way
    did not: its batch is not looked at."""


@dataclass(frozen=True)
class Queued:
    """The columns of a job that sending it needs, read as plain values: a submit is the step every
    job takes, and an ORM object costs more to build than the statement that reads it."""

    id: int
    provider: str
    account: str
    pinned_account: str | None
    spec: dict[str, Any]
    attempts: int
    rotations: int
    lost_answers: int


_BATCHES: Table = Batch.__table__  # type: ignore[attr-defined]
_TASKS: Table = ProviderTask.__table__  # type: ignore[attr-defined]
_PAUSES: Table = AccountPause.__table__  # type: ignore[attr-defined]
_EVENTS: Table = JobEvent.__table__  # type: ignore[attr-defined]
# Built once: the job, whether its batch holds it back, and whether its account is paused by hand.
_TO_SEND = (
    select(
        JOBS.c.state,
        JOBS.c.provider,
        JOBS.c.account,
        JOBS.c.pinned_account,
        JOBS.c.spec,
        JOBS.c.attempts,
        JOBS.c.rotations,
        JOBS.c.lost_answers,
        _BATCHES.c.paused_reason,
        _BATCHES.c.canceled,
        select(func.count())
        .where(
            _PAUSES.c.account == JOBS.c.account,
            or_(_PAUSES.c.until.is_(None), _PAUSES.c.until > bindparam("now")),
        )
        .scalar_subquery()
        .label("paused_by_hand"),
    )
    .join(_BATCHES, _BATCHES.c.id == JOBS.c.batch_id)
    .where(JOBS.c.id == bindparam("job_id"))
)


def submit_job(runtime: Runtime, job_id: int) -> AfterSubmit:
    """Send the job if it is still queued, and record what the provider answered."""
    now = utcnow()
    with transaction(runtime.engine) as session:
        # Read, looked over and claimed in one transaction, the reading in one statement.
        row = session.execute(_TO_SEND, {"job_id": job_id, "now": now}).first()
        if row is None or row.state != JobState.QUEUED.value or row.account is None:
            return AfterSubmit()
        job = Queued(job_id, row.provider, row.account, row.pinned_account, row.spec, row.attempts, row.rotations,
                     row.lost_answers)  # fmt: skip
        account = runtime.accounts.get(job.account)
        if account is None:
            return AfterSubmit(ended=True)
        held = holds_back(row.paused_reason, row.canceled)
        if held == "canceled":
            move(session, job_id, JobState.QUEUED, JobState.CANCELED, error=CANCELED_REASON, credits=None)
            return AfterSubmit(ended=True)
        if held is not None or row.paused_by_hand:
            # Claimed before its batch was paused or its account paused by hand: back to waiting.
            move(session, job_id, JobState.QUEUED, JobState.PENDING, account=job.pinned_account, credits=None)
            return AfterSubmit()
        provider = runtime.provider(account.name)
        spec = JobSpec.model_validate(job.spec)
        lease = now + timedelta(seconds=provider.submit_timeout(spec) + runtime.settings.lease_margin)
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
        wait = while_the_database_is_back(partial(_after_error, runtime, job, error))
        return AfterSubmit(wait=wait, ended=wait is None)
    return AfterSubmit(collect=while_the_database_is_back(partial(record_submitted, runtime, job, submitted)))


def _not_now(runtime: Runtime, job: Queued, wait: float) -> AfterSubmit:
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
    runtime: Runtime, job: Queued, submitted: Submitted, *, source: JobState = JobState.SUBMITTING
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
    with transaction(runtime.engine) as session:
        moved = move(session, job.id, source, target, **done)
        if not moved and source is JobState.SUBMITTING:
            moved = move(session, job.id, JobState.UNCERTAIN, target, **done)
            if moved:
                late = {"event": "answer arrived late", "detail": "taken as the job's after all"}
                session.execute(insert(_EVENTS), {"job_id": job.id, "at": now, **late})
        if not moved:
            # Written already by an attempt whose commit was not acknowledged (the database restarting)?
            stored = session.execute(select(JOBS.c.state).where(JOBS.c.id == job.id)).scalar()
            has_tasks = session.execute(select(_TASKS.c.id).where(_TASKS.c.job_id == job.id)).first()
            return stored == target and has_tasks is not None and target is JobState.COLLECTING
        session.execute(insert(_TASKS), tasks)
    if isinstance(submitted, Started) and submitted.credits_remaining is not None:
        with session_scope(runtime.engine) as session:
            record_balance(session, job.account, job.provider, submitted.credits_remaining)
    return target is JobState.COLLECTING


def _task(job: Queued, now: datetime, **values: Any) -> dict[str, Any]:
    """A ``ProviderTask`` row's values, every column given (a plain insert runs no model defaults)."""
    row: dict[str, Any] = {
        "job_id": job.id,
        "account": job.account,
        "provider": job.provider,
        "state": TaskState.RUNNING.value,
        "images": [],
        "error": None,
        "polls": 0,
        "poll_errors": 0,
        "submitted_at": now,
        "next_poll_at": now,
        "poll_due_at": None,
        "last_polled_at": None,
        "finished_at": None,
    }
    return row | values


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


def _after_error(runtime: Runtime, job: Queued, error: ProviderError) -> float | None:
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
