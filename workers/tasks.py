"""The Celery tasks: each finds its work by id, calls one plain step function, and sends the next
wake-ups. Arguments are ids only, never a key or a prompt."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import redis
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import Task
from celery.signals import worker_init, worker_process_init, worker_ready
from celery.worker.request import Request

from jobs.db import make_engine, migrate
from jobs.errors import PictureRefused, StorageError
from jobs.redisserver import client_url
from jobs.settings import Settings
from workers.app import MAX_COUNTDOWN, app
from workers.collect import (
    Collecting,
    Fetched,
    collect_failed,
    collect_job,
    fetch_pictures,
    hold_collecting,
    record_all_collected,
)
from workers.dispatch import dispatch
from workers.finish import finish_batch_if_done, job_ended
from workers.liveness import Heartbeat, forget_child
from workers.polling import due_polls, poll_tasks
from workers.reconcile import reconcile
from workers.runtime import Runtime
from workers.settle import Settled, settle
from workers.submission import submit_job

COLLECT_RETRIES = 5
SPREAD = 32
"""The fewest messages a round's submits or a sweep's polls go out in, when there are more than
this (``in_messages``)."""
RECORD_EVERY = 1.0
"""Seconds the collects of one poll are recorded together for, at most (``collect_now``)."""
INLINE_COLLECT_SECONDS = 5.0
"""Seconds a poll (or a submit) may spend collecting what it found ready before it sends the rest
out as collect messages (``collect_now``)."""

Item = TypeVar("Item")
log = logging.getLogger(__name__)
# httpx logs every request's full URL at INFO, and a signed picture link's query is its credential:
# the worker's own lines name what went wrong (without the query), so httpx speaks only of trouble.
logging.getLogger("httpx").setLevel(logging.WARNING)


class GenqRequest(Request):  # type: ignore[misc]
    """A task's message as the worker's main process handles it. When the pool process running it
    died (SIGKILL, out of memory), Celery hands the main process a ``WorkerLostError`` and requeues the
    message; the dead process's heartbeat is then dropped and the reconciler woken, so the jobs it held
    (a submit mid-call, a collect) are taken at once, not when its heartbeat would have run out."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        outcome = super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        error = exc_info.exception
        if isinstance(error, ExceptionWithTraceback):
            error = error.exc
        if isinstance(error, WorkerLostError) and self.worker_pid:
            _pool_process_died(self.worker_pid)
        return outcome


def _pool_process_died(pid: int) -> None:
    try:
        client = redis.Redis.from_url(
            client_url(Settings().resolved_redis_url()), socket_timeout=2, socket_connect_timeout=2
        )
        try:
            holders = forget_child(client, pid)
        finally:
            client.close()
        if holders:
            log.warning("pool process %d died holding jobs as %s: reconciling now", pid, ", ".join(holders))
            reconcile_task.apply_async()
    except Exception:
        # This runs in the worker's main process, inside its event loop, where an error would stop the
        # worker; the dead process's heartbeat still runs out by itself, a little later.
        log.exception("pool process %d died; its jobs wait for its heartbeat to run out", pid)


class GenqTask(Task):  # type: ignore[misc]
    """A task with the process's ``Runtime``, built on first use after the fork, and the process's
    heartbeat, started with it: a process that holds jobs is one whose death must be seen."""

    Request = GenqRequest
    _runtime: Runtime | None = None
    _heartbeat: Heartbeat | None = None
    _lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        return process_runtime()


def process_runtime() -> Runtime:
    """This process's runtime, built on first use (after the fork), with its heartbeat."""
    if GenqTask._runtime is None:
        with GenqTask._lock:
            if GenqTask._runtime is None:
                runtime = Runtime()
                GenqTask._heartbeat = Heartbeat(runtime.redis).start()
                GenqTask._runtime = runtime
    return GenqTask._runtime


@worker_process_init.connect
def _warm_pool_process(**_: Any) -> None:
    """A prefork pool process builds its runtime as it starts, not when its first task has its token."""
    _warm()


@worker_ready.connect
def _warm_worker(sender: Any = None, **_: Any) -> None:
    """A pool that runs tasks in the worker's own process (threads, solo) builds it once the worker is
    up; a prefork worker's main process runs no task and builds nothing (its children would inherit it)."""
    from celery.concurrency.prefork import TaskPool as PreforkPool

    if not isinstance(getattr(sender, "pool", None), PreforkPool):
        _warm()


def _warm() -> None:
    try:
        process_runtime().warm()
    except Exception as error:  # Redis or the database not answering yet: the first task builds it
        log.warning("worker process not warmed up (its first task builds what it needs): %s", error)


@worker_init.connect
def _migrate_on_start(**_: Any) -> None:
    engine = make_engine(Settings().resolved_database_url())
    try:
        migrate(engine)
    finally:
        engine.dispose()


@app.task(name="genq.dispatch", base=GenqTask, bind=True)
def dispatch_task(self: GenqTask) -> int:
    queued = dispatch(self.runtime)
    # One connection from the pool for the whole round, not one taken and given back per message.
    with app.producer_or_acquire() as producer:
        for job_ids in in_messages(queued):
            submit_task.apply_async((job_ids,), producer=producer)
    return len(queued)


def in_messages(items: Sequence[Item], spread: int = SPREAD) -> list[list[Item]]:
    """The jobs of a round (or the poll requests of a sweep) in messages: one each, unless there are
    more than ``spread`` (a key with a high limit, a fleet just started, a wave of first polls); then
    ``spread`` messages share them, in order. A message costs the worker about as much as a small
    job, and ``spread`` messages still keep that many threads busy at once."""
    size = max(1, -(-len(items) // spread))
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


@app.task(name="genq.submit", base=GenqTask, bind=True)
def submit_task(self: GenqTask, job_ids: Sequence[int] | int) -> None:
    """Send each job in turn (a message from before jobs were grouped carries one id)."""
    job_ids = [job_ids] if isinstance(job_ids, int) else list(job_ids)
    ready: list[int] = []
    for position, job_id in enumerate(job_ids):
        after = submit_job(self.runtime, job_id)
        if after.wait is not None:
            # Waiting for the rate limit is not a retry: the same jobs come back, retries untouched. The
            # key that has no request for this job has none for the jobs after it either.
            rest = job_ids[position:]
            submit_task.apply_async((rest,), countdown=min(after.wait, MAX_COUNTDOWN))
            break
        if after.collect:
            ready.append(job_id)
        elif after.ended:
            job_ended(self.runtime, job_id)
    # Pictures a synchronous provider sent back are collected once every request of the message is out.
    collect_now(self.runtime, ready)


@app.task(name="genq.sweep", base=GenqTask, bind=True)
def sweep_task(self: GenqTask) -> int:
    groups = due_polls(self.runtime)
    with app.producer_or_acquire() as producer:
        for message in in_messages(groups):
            poll_task.apply_async((message,), producer=producer)
    return len(groups)


@app.task(name="genq.poll", base=GenqTask, bind=True)
def poll_task(self: GenqTask, groups: Sequence[Sequence[int]] | Sequence[int]) -> None:
    """Poll each group of provider tasks (a request each), then collect what they found ready: every
    poll of the message goes out before any picture is fetched, so a wave of first polls falling due
    together is not held back behind the downloads. A message from before groups were sent together
    carries one group."""
    ready: list[int] = []
    failed: list[int] = []
    for group in _groups(groups):
        found = poll_tasks(self.runtime, group)
        if found.wait is not None:
            # As with a submit: the same poll comes back when the key frees a request, retries untouched.
            poll_task.apply_async(([group],), countdown=min(found.wait, MAX_COUNTDOWN))
        ready += found.ready
        failed += found.failed
    collect_now(self.runtime, ready)
    for job_id in failed:
        job_ended(self.runtime, job_id)


def _groups(groups: Sequence[Sequence[int]] | Sequence[int]) -> list[list[int]]:
    if any(isinstance(group, int) for group in groups):
        return [[int(task_id) for task_id in groups]]  # type: ignore[arg-type]
    return [list(group) for group in groups]  # type: ignore[arg-type]


@app.task(name="genq.collect", base=GenqTask, bind=True, max_retries=COLLECT_RETRIES)
def collect_task(self: GenqTask, job_id: int) -> None:
    retry_in = collect_step(self.runtime, job_id, attempt=self.request.retries)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


def collect_step(runtime: Runtime, job_id: int, *, attempt: int) -> float | None:
    """Collect the job (its ``attempt``-th try, from 0) and finish its batch if it was the last; or,
    where fetching again can help, the seconds after which to try again."""
    retry_in, batch_id = _collect(runtime, job_id, attempt=attempt)
    if batch_id is not None:
        finish_batch_if_done(runtime, batch_id)
    elif retry_in is None:  # it failed here, or was not ours to end: its row says whether it ended
        job_ended(runtime, job_id)
    return retry_in


def _collect(
    runtime: Runtime, job_id: int, *, attempt: int, held: Collecting | None = None
) -> tuple[float | None, int | None]:
    """Collect the job: the seconds after which to try again (None when not), and the batch to finish
    when the job succeeded here (None when it did not, or failed)."""
    try:
        return None, collect_job(runtime, job_id, held=held)
    except (PictureRefused, StorageError) as error:
        return _refused(runtime, job_id, error, attempt=attempt), None


def _refused(runtime: Runtime, job_id: int, error: PictureRefused | StorageError, *, attempt: int) -> float | None:
    """A collect that could not fetch or store a picture: the seconds after which to try again, or
    None when the job failed. A refusal that fetching again cannot help fails the job at once; a
    failed download, or a store that refused a write, is tried again, then the job fails with why
    (never left collecting)."""
    final = isinstance(error, PictureRefused) and error.final
    if not final and attempt < COLLECT_RETRIES:
        countdown = min(max(2**attempt, getattr(error, "retry_after", 0.0)), MAX_COUNTDOWN)
        collect_failed(runtime, job_id, error, retry_in=countdown)
        return countdown
    collect_failed(runtime, job_id, error, retry_in=None)
    return None


def collect_now(runtime: Runtime, job_ids: Sequence[int]) -> None:
    """Collect jobs a poll or a synchronous submit found ready, in this task, rather than send a
    collect message each: the pictures are there now, and a message costs more than a small picture.

    The guarantees are a collect message's: each job was moved ``running -> collecting`` before this
    runs, and all of them are held by this process before the first is collected, so a process
    killed here leaves them to the reconciler, which collects them again at once. The jobs whose
    pictures are stored are recorded together, in one transaction at least every ``RECORD_EVERY``
    seconds, each moved by its own compare-and-set. Once ``INLINE_COLLECT_SECONDS`` are spent (slow
    downloads), the rest go out as messages, to be fetched side by side; a try that failed goes out
    as the collect message's first retry, so a job is tried as many times either way. Each batch is
    looked at once, after the last of its jobs here.
    """
    held = hold_collecting(runtime, job_ids)
    started = recorded = time.monotonic()
    fetched: list[Fetched] = []
    finished: dict[int, None] = {}
    for job_id in job_ids:
        if job_id not in held:  # not collecting: another delivery ended it, its row says how
            job_ended(runtime, job_id)
            continue
        if time.monotonic() - started > INLINE_COLLECT_SECONDS:
            collect_task.delay(job_id)
            continue
        try:
            fetched.append(fetch_pictures(runtime, job_id, held[job_id]))
        except (PictureRefused, StorageError) as error:
            retry_in = _refused(runtime, job_id, error, attempt=0)
            if retry_in is not None:
                collect_task.apply_async((job_id,), countdown=retry_in, retries=1)
            else:
                job_ended(runtime, job_id)
        except Exception:
            # As a collect message that raised: the job stays collecting for the reconciler, and
            # the jobs after it in this poll are not held up by it.
            log.exception("collect of job %s failed; left to the reconciler", job_id)
        if fetched and time.monotonic() - recorded > RECORD_EVERY:
            finished |= _record(runtime, fetched)
            fetched, recorded = [], time.monotonic()
    finished |= _record(runtime, fetched)
    for batch_id in finished:
        finish_batch_if_done(runtime, batch_id)


def _record(runtime: Runtime, fetched: Sequence[Fetched]) -> dict[int, None]:
    """Record the fetched jobs in one transaction; the batches of those that moved. A job another
    delivery ended meanwhile is left as its row says; should the write fail, every one of them
    stays collecting, held by this process, for the reconciler (their pictures are stored)."""
    if not fetched:
        return {}
    try:
        moved = record_all_collected(runtime, fetched)
    except Exception:
        log.exception("collects of jobs %s not recorded; left to the reconciler", [item.job_id for item in fetched])
        return {}
    for item in fetched:
        if item.job_id not in moved:
            job_ended(runtime, item.job_id)
    return {item.batch_id: None for item in fetched if item.job_id in moved}


@app.task(name="genq.reconcile", base=GenqTask, bind=True)
def reconcile_task(self: GenqTask, stale_after: float | None = None) -> dict[str, int]:
    found = reconcile(self.runtime, stale_after)
    for job_ids in in_messages(found.resubmit):
        submit_task.delay(job_ids)
    for job_id in found.recollect:
        collect_task.delay(job_id)
    for job_id in found.settle:
        settle_task.delay(job_id)
    for job_id in found.failed:
        job_ended(self.runtime, job_id)
    return {
        "resubmitted": len(found.resubmit),
        "recollected": len(found.recollect),
        "uncertain": len(found.uncertain),
        "settling": len(found.settle),
    }


@app.task(name="genq.settle", base=GenqTask, bind=True)
def settle_task(self: GenqTask, job_id: int) -> str:
    outcome = settle(self.runtime, job_id)
    if outcome.collect:
        collect_task.delay(job_id)
    elif outcome.settled is Settled.FAILED:
        job_ended(self.runtime, job_id)
    return outcome.settled.value
