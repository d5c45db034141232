"""Polling: which provider tasks are due, and what one poll of a group of them finds.

The sweeper leases the due tasks (pushes their next poll a lease ahead) before sending them, so a
second sweep does not send them twice while their poll is on its way. Polls back off with jitter from
the learned first-poll delay to ``max_poll_interval``; each poll remembers when it is due by this
schedule (``poll_due_at``), which neither a lease nor a wait for the allowance moves. A poll that
finds its key's allowance spent is sent again for the moment a request frees, its lease lengthened to
cover the wait: the next sweep would come up to a sweep interval after that moment, and a request no
one takes when it frees is lost to the key's minute.

Polls end. A failed poll's next step comes from ``POLL_STEP``, keyed by the error's class: a refused
key takes the account out of rotation and its tasks wait for it; an answer that cannot be read is
asked again ``poll_error_limit`` times; a request the provider will never answer fails the tasks. A
task the provider says does not exist fails its job, and so does a task past ``max_task_age``, or of
an account no longer configured, whatever the polls say.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import Table, bindparam, update
from sqlmodel import Session, col, select

from jobs.accounts import Account
from jobs.control import CANCELED_REASON, canceled_running
from jobs.db import Executor, bind_of, is_sqlite, session_scope, transaction
from jobs.errors import GenqError
from jobs.lifecycle import JOBS, JobState, TaskState, move
from jobs.models import RATE_LIMITED, Job, JobEvent, ProviderTask, utcnow
from jobs.settings import Settings
from workers.providers import adapter_class
from workers.providers.base import (
    AnswerLost,
    AnswerTooLarge,
    BadCredentials,
    Finished,
    InvalidRequest,
    OutOfCredits,
    Provider,
    ProviderError,
    RateLimited,
    Refused,
    StillRunning,
    TaskFailed,
    TaskStatus,
    Transient,
    Unreadable,
    decide,
    polls_count,
)
from workers.ratelimit import RequestKind
from workers.runtime import Runtime
from workers.timing import FOLLOW_UP_SHARE, Completion

LEASE_SECONDS = 60.0
"""How long a task sent to be polled is left alone by the sweeper (the poll itself sets the next time)."""
MIN_FOLLOW_UP = 0.5
"""Seconds; the shortest wait between two polls of one task."""
AGE_SHARE = 0.1
"""The longest wait between two polls of one task, as a share of the task's age."""
RESEND_WITHIN = 60.0
"""Seconds; a poll that must wait no longer than this for its key's allowance is sent again for the
moment it frees (the longest the broker holds a message back). A longer wait (a pause after a 429,
a refused key) lives in the database, and the sweep sends the poll when it is over."""
SWEEP_LIMIT = 2_000
"""The most provider tasks one sweep sends; the next sweep takes the rest."""


log = logging.getLogger(__name__)


class PollStep(Enum):
    WAIT = "wait"
    """The key is rate limited: the account pauses for the fleet, the tasks are asked after the pause."""
    ROTATE = "rotate"
    """The key is refused: the account leaves rotation, its tasks wait for it (up to their age)."""
    RETRY = "retry"
    """Ask again by the usual backoff, until the task's age runs out."""
    RETRY_FEW = "retry a few times"
    """Ask again, but only ``poll_error_limit`` times in a row."""
    FAIL = "fail"
    """The provider will never answer this poll: the tasks fail with its reason."""


POLL_STEP: dict[type[ProviderError], PollStep] = {
    ProviderError: PollStep.RETRY,
    RateLimited: PollStep.WAIT,
    BadCredentials: PollStep.ROTATE,
    OutOfCredits: PollStep.ROTATE,
    Transient: PollStep.RETRY,
    Unreadable: PollStep.RETRY_FEW,
    AnswerLost: PollStep.RETRY,
    AnswerTooLarge: PollStep.FAIL,
    InvalidRequest: PollStep.FAIL,
    Refused: PollStep.FAIL,
}


def poll_step(error: ProviderError) -> PollStep:
    return decide(POLL_STEP, error)


def due_polls(runtime: Runtime) -> list[list[int]]:
    """Lease the provider tasks that are due and group them into poll requests, per account and
    the provider's ``poll_group``.

    Due means due by the time of the sweep nearest: a task due before the next sweep's half-way
    mark goes now, up to half a sweep early, rather than up to a whole sweep late (a picture waits
    half as long, on average, for a poll that is no likelier to miss it).
    """
    now = utcnow()
    cutoff = now + timedelta(seconds=runtime.settings.sweep_interval / 2)
    with session_scope(runtime.engine) as session:
        due = session.exec(
            select(ProviderTask.id, ProviderTask.remote_id, ProviderTask.account, ProviderTask.provider)
            .where(col(ProviderTask.state) == TaskState.RUNNING.value, col(ProviderTask.next_poll_at) <= cutoff)
            .order_by(col(ProviderTask.next_poll_at))
            .limit(SWEEP_LIMIT)
        ).all()
        if not due:
            return []
        ids = [row[0] for row in due if row[0] is not None]
        leased = session.execute(
            update(ProviderTask)
            .where(col(ProviderTask.id).in_(ids), col(ProviderTask.next_poll_at) <= cutoff)
            .values(next_poll_at=now + timedelta(seconds=LEASE_SECONDS))
            .returning(col(ProviderTask.id))
        )
        mine = {row[0] for row in leased}
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    sizes: dict[tuple[str, str], int] = {}
    for task_id, remote_id, account, provider in due:
        if task_id is not None and task_id in mine:
            adapter = adapter_class(provider)
            group = (account, adapter.poll_group(remote_id))
            groups[group].append(task_id)
            sizes[group] = adapter.batch_poll_size
    return [
        ids[start : start + sizes[group]] for group, ids in groups.items() for start in range(0, len(ids), sizes[group])
    ]


@dataclass
class PollResult:
    ready: list[int] = field(default_factory=list)
    """Jobs whose every provider task finished well: to be collected."""
    failed: list[int] = field(default_factory=list)
    """Jobs that failed on this poll."""
    wait: float | None = None
    """No poll was made: send the same poll again after this many seconds (the key's allowance is spent)."""


def poll_tasks(runtime: Runtime, task_ids: Sequence[int]) -> PollResult:
    """Ask the provider about these tasks (one account's) and record what it says."""
    with Session(runtime.engine) as session:
        tasks = list(
            session.exec(
                select(ProviderTask).where(
                    col(ProviderTask.id).in_(task_ids), col(ProviderTask.state) == TaskState.RUNNING.value
                )
            ).all()
        )
    result = PollResult()
    tasks = _not_canceled(runtime, tasks, result)
    if not tasks:
        return result
    account = runtime.accounts.get(tasks[0].account)
    if account is None:
        for task in tasks:
            end_task(runtime, task, TaskFailed(f"account {task.account} is no longer in the accounts file"), result)
        return result
    now = utcnow()
    for task in [task for task in tasks if (now - task.submitted_at).total_seconds() > runtime.settings.max_task_age]:
        age = (now - task.submitted_at).total_seconds()
        end_task(runtime, task, TaskFailed(f"still running after {age:.0f} s; given up"), result)
        tasks.remove(task)
    if not tasks:
        return result
    provider = runtime.provider(account.name)
    wait = may_read(runtime, account, provider, kind="poll")
    if wait > 0:
        return _wait_for_allowance(runtime, tasks, wait)
    return _poll(runtime, account.name, provider, tasks, result)


def may_read(runtime: Runtime, account: Account, provider: Provider, *, kind: RequestKind) -> float:
    """0 when a poll (or a lookup) may go now, else seconds to wait. Where polls count, one request is
    taken from the allowance; where the account's polls are free, only its pause is looked at: a key
    paused after a 429 (to any of its requests) or refused sends nothing until the pause ends, for
    the provider that turned away one request turns away the next."""
    if polls_count(account, provider):
        return runtime.limiter.acquire(account.name, account.rpm, kind=kind)
    return runtime.limiter.standing(account.name).paused_for


def _not_canceled(runtime: Runtime, tasks: list[ProviderTask], result: PollResult) -> list[ProviderTask]:
    """The tasks still to poll. Those of a batch canceled with what runs (``genq cancel --running``:
    its job was being submitted when the cancel came) end here, unpolled, their jobs ``canceled``."""
    with Session(runtime.engine) as session:
        canceled = canceled_running(session, {task.job_id for task in tasks})
    ended = [task for task in tasks if task.job_id in canceled]
    for task in ended:
        with session_scope(runtime.engine) as session:
            lock_job(session, task.job_id)
            session.execute(
                update(ProviderTask)
                .where(col(ProviderTask.id) == task.id, col(ProviderTask.state) == TaskState.RUNNING.value)
                .values(state=TaskState.FAILED.value, error=CANCELED_REASON, finished_at=utcnow())
            )
            if move(session, task.job_id, JobState.RUNNING, JobState.CANCELED, error=CANCELED_REASON):
                result.failed.append(task.job_id)
    delete_at_provider(runtime, [(task.account, task.remote_id) for task in ended])
    return [task for task in tasks if task.job_id not in canceled]


def delete_at_provider(runtime: Runtime, tasks: Sequence[tuple[str, str]]) -> int:
    """Delete canceled tasks at their provider where its API has a delete (qtpixel); how many were.

    Best effort: the job is canceled whatever the provider answers, and a task that cannot be
    deleted runs to its end unpolled.
    """
    deleted = 0
    for account, remote_id in tasks:
        if account not in runtime.accounts:
            continue
        try:
            deleted += runtime.provider(account).delete(remote_id)
        except GenqError as error:
            log.warning("task %s of %s not deleted at the provider: %s", remote_id, account, error)
    return deleted


def _wait_for_allowance(runtime: Runtime, tasks: Sequence[ProviderTask], wait: float) -> PollResult:
    """No poll was made. A short wait is taken by sending the poll again for that moment, its lease
    lengthened past it (should the message be lost, the sweep sends it after all)."""
    if wait > RESEND_WITHIN:
        _reschedule(runtime, tasks, wait)
        return PollResult()
    _reschedule(runtime, tasks, wait + LEASE_SECONDS)
    return PollResult(wait=wait)


def _poll(
    runtime: Runtime, account_name: str, provider: Provider, tasks: list[ProviderTask], result: PollResult
) -> PollResult:
    """The request itself, its allowance taken. The jobs' models (which key the learned first-poll
    delay) are read only here: a poll that lost the race for a request costs as little as it can."""
    try:
        statuses = provider.poll([task.remote_id for task in tasks])
    except ProviderError as error:
        _after_poll_error(runtime, account_name, tasks, error, result)
        return result
    with Session(runtime.engine) as session:
        specs = session.exec(select(Job.id, Job.spec).where(col(Job.id).in_({task.job_id for task in tasks}))).all()
    models: dict[int, str | None] = {job_id: spec.get("model") for job_id, spec in specs if job_id is not None}
    learn(runtime, [(task, statuses.get(task.remote_id), models.get(task.job_id)) for task in tasks])
    running: list[tuple[ProviderTask, float, bool]] = []
    ended: list[tuple[ProviderTask, Finished | TaskFailed]] = []
    for task in tasks:
        status = statuses.get(task.remote_id)
        model = models.get(task.job_id)
        if status is None or isinstance(status, StillRunning):
            running.append((task, runtime.timing.first_poll_delay(task.provider, model), status is not None))
        else:
            ended.append((task, status))
    # What one request found is written in one transaction.
    now = utcnow()
    with transaction(runtime.engine) as session:
        for task, learned, found_running in running:
            # If the fleet learned meanwhile that tasks take longer than this one was given, wait for that.
            age = (now - task.submitted_at).total_seconds()
            _reschedule_in(session, runtime, [task], None, learned, at_least=learned - age,
                           polled_at=now if found_running else None)  # fmt: skip
        _end_in(session, ended, result)
    return result


def _after_poll_error(
    runtime: Runtime, account_name: str, tasks: Sequence[ProviderTask], error: ProviderError, result: PollResult
) -> None:
    step = poll_step(error)
    wait = f"; Retry-After {error.retry_after:g} s" if isinstance(error, RateLimited) else ""
    log.warning("poll of %d task(s) of job(s) %s on %s: %s (%s%s): %s", len(tasks),
                ",".join(str(t.job_id) for t in tasks), account_name, type(error).__name__, step.value, wait,
                error)  # fmt: skip
    if step is PollStep.WAIT:
        assert isinstance(error, RateLimited)
        runtime.limiter.pause(account_name, error.retry_after, "rate limited by the provider (429)")
        with session_scope(runtime.engine) as session:
            # One line per request turned away, on the first job it asked about: a batch's 429s are counted
            # from these.
            session.add(JobEvent(job_id=tasks[0].job_id, event=RATE_LIMITED, detail=f"{account_name}: poll{wait}"))
        _reschedule(runtime, tasks, error.retry_after)
    elif step is PollStep.ROTATE:
        why = "the provider refused its key" if isinstance(error, BadCredentials) else "the account was refused"
        runtime.limiter.pause(account_name, runtime.settings.rotation_pause, why, out_of_rotation=True)
        _reschedule(runtime, tasks, runtime.settings.rotation_pause)
    elif step is PollStep.FAIL:
        for task in tasks:
            end_task(runtime, task, TaskFailed(f"a poll the provider will not answer: {error}"), result)
    elif step is PollStep.RETRY_FEW:
        for task in tasks:
            if task.poll_errors + 1 >= runtime.settings.poll_error_limit:
                reason = f"{task.poll_errors + 1} polls in a row could not be read: {error}"
                end_task(runtime, task, TaskFailed(reason), result)
            else:
                _reschedule(runtime, [task], None, poll_errors=task.poll_errors + 1)
    else:
        _reschedule(runtime, tasks, None)


def learn(runtime: Runtime, found: Sequence[tuple[ProviderTask, TaskStatus | None, str | None]]) -> None:
    """Teach the fleet's first-poll delay what a poll proves of each task it found done (``found``:
    each task polled, what the provider said of it, its job's model), in one round trip."""
    now = utcnow()
    completions = []
    for task, status, model in found:
        if not isinstance(status, Finished):
            continue
        age = (now - task.submitted_at).total_seconds()
        # Learned as of when this poll was due, not when it ran: a wait for the key's allowance says
        # nothing of the picture.
        due = age if task.poll_due_at is None else min(age, (task.poll_due_at - task.submitted_at).total_seconds())
        previous = None if task.last_polled_at is None else (task.last_polled_at - task.submitted_at).total_seconds()
        completions.append(Completion(task.provider, model, due, previous))
    runtime.timing.observe_all(completions)


def end_task(runtime: Runtime, task: ProviderTask, status: Finished | TaskFailed, result: PollResult) -> None:
    """Record a provider task's end and, once none of its job's tasks runs, move the job on
    (``after_tasks``)."""
    with session_scope(runtime.engine) as session:
        _end_in(session, [(task, status)], result)


def _end_in(session: Executor, ended: Sequence[tuple[ProviderTask, Finished | TaskFailed]], result: PollResult) -> None:
    """``end_task`` for several tasks, in the caller's transaction.

    The jobs' rows are locked (on PostgreSQL) before their tasks are read, in the order of their ids:
    two polls ending the last two tasks of one job at once would otherwise each see the other still
    running, and neither move it; taken in one order, two polls' locks cannot deadlock.
    """
    if not ended:
        return
    now = utcnow()
    for job_id in sorted({task.job_id for task, _ in ended}):
        lock_job(session, job_id)
    moved_jobs: list[int] = []
    for task, status in ended:
        common = {"where_id": task.id, "set_finished_at": now, "set_polls": task.polls + 1}
        if isinstance(status, Finished):
            images = [{"url": image.url} for image in status.images]
            moved = session.execute(_SUCCEEDED, common | {"set_images": images})
        else:
            moved = session.execute(_FAILED, common | {"set_error": status.reason})
        if moved.rowcount == 1 and task.job_id not in moved_jobs:  # type: ignore[attr-defined]
            moved_jobs.append(task.job_id)
    for job_id, moved_to in after_all_tasks(session, moved_jobs).items():
        if moved_to is JobState.COLLECTING:
            result.ready.append(job_id)
        elif moved_to is JobState.FAILED:
            result.failed.append(job_id)


_TASKS: Table = ProviderTask.__table__  # type: ignore[attr-defined]
# A poll ends every task: its statements are built once, and given their values.
_ENDING = update(_TASKS).where(_TASKS.c.id == bindparam("where_id"), _TASKS.c.state == TaskState.RUNNING.value)
_ENDED = {"finished_at": bindparam("set_finished_at"), "polls": bindparam("set_polls"), "poll_errors": 0}
_SUCCEEDED = _ENDING.values(state=TaskState.SUCCEEDED.value, images=bindparam("set_images"), **_ENDED)
_FAILED = _ENDING.values(state=TaskState.FAILED.value, error=bindparam("set_error"), **_ENDED)
_TASKS_OF_JOBS = (
    select(_TASKS.c.job_id, _TASKS.c.state, _TASKS.c.error, _TASKS.c.account)
    .where(_TASKS.c.job_id.in_(bindparam("job_ids", expanding=True)))
    .order_by(_TASKS.c.job_id, _TASKS.c.index)
)


def after_tasks(session: Executor, job_id: int) -> JobState | None:
    """Move a running job whose tasks have all ended: to be collected when any picture was made (a
    paid picture is kept even when a sibling failed; the job then ends failed, its pictures stored),
    else failed with the first task's reason. None while a task still runs, or if it moved already."""
    return after_all_tasks(session, [job_id]).get(job_id)


def after_all_tasks(session: Executor, job_ids: Sequence[int]) -> dict[int, JobState | None]:
    """``after_tasks`` for several jobs, their tasks read in one statement."""
    if not job_ids:
        return {}
    tasks: dict[int, list[tuple[str, str | None, str]]] = {job_id: [] for job_id in job_ids}
    for job_id, state, error, account in session.execute(_TASKS_OF_JOBS, {"job_ids": list(job_ids)}):
        tasks[job_id].append((state, error, account))
    return {job_id: _after(session, job_id, its_tasks) for job_id, its_tasks in tasks.items()}


def _after(session: Executor, job_id: int, tasks: Sequence[tuple[str, str | None, str]]) -> JobState | None:
    if any(state == TaskState.RUNNING.value for state, _, _ in tasks):
        return None
    failures = [f"{account}: {error}" for state, error, account in tasks if state == TaskState.FAILED.value]
    if any(state == TaskState.SUCCEEDED.value for state, _, _ in tasks):
        error = f"{len(failures)} of {len(tasks)} tasks made no picture: {failures[0]}" if failures else None
        moved = move(session, job_id, JobState.RUNNING, JobState.COLLECTING, error=error)
        return JobState.COLLECTING if moved else None
    reason = failures[0] if failures else "its provider tasks ended without a picture"
    return JobState.FAILED if move(session, job_id, JobState.RUNNING, JobState.FAILED, error=reason) else None


def lock_job(session: Executor, job_id: int) -> None:
    """Hold the job's row until the transaction ends (SELECT ... FOR UPDATE); SQLite has one writer
    at a time anyway."""
    if not is_sqlite(bind_of(session)):
        session.execute(select(JOBS.c.id).where(JOBS.c.id == job_id).with_for_update()).first()


def _reschedule(
    runtime: Runtime, tasks: Sequence[ProviderTask], wait: float | None, first: float | None = None, **options: Any
) -> None:
    """``_reschedule_in``, in a transaction of its own."""
    with session_scope(runtime.engine) as session:
        _reschedule_in(session, runtime, tasks, wait, first, **options)


def _reschedule_in(
    session: Executor,
    runtime: Runtime,
    tasks: Sequence[ProviderTask],
    wait: float | None,
    first: float | None = None,
    *,
    at_least: float = 0.0,
    poll_errors: int = 0,
    polled_at: datetime | None = None,
) -> None:
    """Set the next poll: after ``wait`` seconds when the key must wait (no poll was made), else by
    the follow-up backoff, and not before ``at_least`` seconds. Only the backoff is a schedule, so
    only it sets when the poll is due (``poll_due_at``); a wait moves the poll, not its due time.
    ``polled_at``: when this poll found the tasks still running."""
    now = utcnow()
    for task in tasks:
        values: dict[str, object] = {"poll_errors": poll_errors}
        if wait is None:
            start = runtime.timing.default_delay(task.provider) if first is None else first
            age = (now - task.submitted_at).total_seconds()
            # Tasks asked about in one request go on together: their follow-ups share requests too.
            alone = adapter_class(task.provider).batch_poll_size == 1
            delay = max(next_poll_delay(runtime.settings, task.polls + 1, start, age=age, jitter=alone), at_least)
            values |= {"polls": task.polls + 1, "poll_due_at": now + timedelta(seconds=delay)}
        else:
            delay = max(wait, at_least)
        if polled_at is not None:
            values["last_polled_at"] = polled_at
        session.execute(
            update(ProviderTask)
            .where(col(ProviderTask.id) == task.id, col(ProviderTask.state) == TaskState.RUNNING.value)
            .values(next_poll_at=now + timedelta(seconds=delay), **values)
        )


def next_poll_delay(settings: Settings, polls: int, first: float, *, age: float, jitter: bool = True) -> float:
    """Seconds to the next poll after ``polls`` that found the task running: ``follow_up_gap``, with
    jitter so tasks submitted together do not stay in lockstep, where each task takes a request of
    its own; where one request asks about many, lockstep is what lets their follow-ups share one."""
    return follow_up_gap(settings, polls, first, age=age) * (random.uniform(0.8, 1.2) if jitter else 1.0)


def follow_up_gap(settings: Settings, polls: int, first: float, *, age: float) -> float:
    """The wait after ``polls`` that found the task running, ``age`` seconds after its submit: a short
    follow-up (a share of the learned first delay, since it is likely done soon), growing by half each
    time, capped. Never more than ``AGE_SHARE`` of the task's age: a task found done by a follow-up is
    learned as the middle of its gap, so a gap wide beside its age (many polls begun before the fleet
    learned how long tasks take) would teach the fleet that tasks are slower than they are, and hold
    a done picture back as long."""
    base = max(first * FOLLOW_UP_SHARE, MIN_FOLLOW_UP) * (1.5 ** (polls - 1))
    return min(base, max(age * AGE_SHARE, MIN_FOLLOW_UP), settings.max_poll_interval)
