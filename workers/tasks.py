"""The Celery tasks: each finds its work by id, calls one plain step function, and sends the next
wake-ups. Arguments are ids only, never a key or a prompt."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from celery import Task
from celery.signals import worker_init

from jobs.db import make_engine, migrate
from jobs.errors import PictureRefused, StorageError
from jobs.settings import Settings
from workers.app import MAX_COUNTDOWN, app
from workers.collect import collect_job, fail_collect
from workers.dispatch import dispatch
from workers.finish import job_ended
from workers.liveness import Heartbeat
from workers.polling import due_polls, poll_tasks
from workers.reconcile import reconcile
from workers.runtime import Runtime
from workers.settle import Settled, settle
from workers.submission import submit_job

COLLECT_RETRIES = 5


class GenqTask(Task):  # type: ignore[misc]
    """A task with the process's ``Runtime``, built on first use after the fork, and the process's
    heartbeat, started with it: a process that holds jobs is one whose death must be seen."""

    _runtime: Runtime | None = None
    _heartbeat: Heartbeat | None = None
    _lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        if GenqTask._runtime is None:
            with GenqTask._lock:
                if GenqTask._runtime is None:
                    runtime = Runtime()
                    GenqTask._heartbeat = Heartbeat(runtime.redis).start()
                    GenqTask._runtime = runtime
        return GenqTask._runtime


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
    for job_id in queued:
        submit_task.delay(job_id)
    return len(queued)


@app.task(name="genq.submit", base=GenqTask, bind=True)
def submit_task(self: GenqTask, job_id: int) -> None:
    after = submit_job(self.runtime, job_id)
    if after.wait is not None:
        # Waiting for the rate limit is not a retry: the same message comes back, retries untouched.
        submit_task.apply_async((job_id,), countdown=min(after.wait, MAX_COUNTDOWN))
    elif after.collect:
        collect_task.delay(job_id)
    else:
        job_ended(self.runtime, job_id)


@app.task(name="genq.sweep", base=GenqTask, bind=True)
def sweep_task(self: GenqTask) -> int:
    groups = due_polls(self.runtime)
    for group in groups:
        poll_task.delay(group)
    return len(groups)


@app.task(name="genq.poll", base=GenqTask, bind=True)
def poll_task(self: GenqTask, provider_task_ids: Sequence[int]) -> None:
    found = poll_tasks(self.runtime, provider_task_ids)
    if found.wait is not None:
        # As with a submit: the same poll comes back when the key frees a request, retries untouched.
        poll_task.apply_async((list(provider_task_ids),), countdown=min(found.wait, MAX_COUNTDOWN))
    for job_id in found.ready:
        collect_task.delay(job_id)
    for job_id in found.failed:
        job_ended(self.runtime, job_id)


@app.task(name="genq.collect", base=GenqTask, bind=True, max_retries=COLLECT_RETRIES)
def collect_task(self: GenqTask, job_id: int) -> None:
    try:
        collect_job(self.runtime, job_id)
    except PictureRefused as error:
        if error.final or self.request.retries >= COLLECT_RETRIES:
            fail_collect(self.runtime, job_id, str(error))
        else:
            raise self.retry(countdown=min(2**self.request.retries, MAX_COUNTDOWN)) from None
    except StorageError as error:
        # The store refused a write: tried again, then the job fails with why (never left collecting).
        if self.request.retries >= COLLECT_RETRIES:
            fail_collect(self.runtime, job_id, str(error))
        else:
            raise self.retry(countdown=min(2**self.request.retries, MAX_COUNTDOWN)) from None
    job_ended(self.runtime, job_id)


@app.task(name="genq.reconcile", base=GenqTask, bind=True)
def reconcile_task(self: GenqTask, stale_after: float | None = None) -> dict[str, int]:
    found = reconcile(self.runtime, stale_after)
    for job_id in found.resubmit:
        submit_task.delay(job_id)
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
