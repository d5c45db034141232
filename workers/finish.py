"""Finish: when every job of a batch is final, the batch is final, with what it leaves behind in storage.

Its results (``results.jsonl``, ``results.csv``, ``errors.csv``) are written before the batch row
changes, so a batch marked final always has them; its sprite sheets before them and its report after
(``jobs.outputs``). One worker at a time writes them (a claim in Redis, ``FINISHING_SECONDS`` long):
the last collect and the reconciler often find a batch done at the same moment, and a report of a
large batch costs seconds. Should the claim's holder die, the next finisher after it runs out writes
the same bytes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy import Table, bindparam, func, update
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.errors import GenqError, RedisUnavailable
from jobs.lifecycle import FINAL, JOBS, BatchState, JobState
from jobs.models import RATE_LIMITED, Batch, Job, JobEvent, ProviderTask, utcnow
from jobs.outputs import plan_sheets, sheet_of, write_sheets
from jobs.rediscalls import talking_to_redis
from jobs.report import AccountFigures, RunFigures, write_report
from jobs.results import RowResult, row_results, write_results
from jobs.retry import retry_spec
from jobs.spec import JobSpec
from workers.liveness import holder_id
from workers.plan import Plan, plan_batch
from workers.providers import ADAPTERS
from workers.providers.base import Cost
from workers.runtime import Runtime

log = logging.getLogger(__name__)

FINISHING_SECONDS = 120
"""How long one worker's claim to write a batch's outputs holds, should it die before it lets go."""


def job_ended(runtime: Runtime, job_id: int) -> None:
    """Call after a step that may have ended a job: finishes its batch if the job is final and was the
    last. A job still on its way (a submit that started provider tasks) costs one read of its row."""
    with runtime.engine.connect() as connection:
        found = connection.execute(_BATCH_AND_STATE, {"job_id": job_id}).first()
    if found is not None and JobState(found[1]) in FINAL:
        finish_batch_if_done(runtime, found[0])


_BATCHES: Table = Batch.__table__  # type: ignore[attr-defined]
UNFINISHED = tuple(state.value for state in JobState if state not in FINAL)
"""The states of a job still on its way; looked up through the index that leads with ``(batch_id, state)``."""
# Asked at every job's end: built once, given their values.
_BATCH_AND_STATE = select(JOBS.c.batch_id, JOBS.c.state).where(JOBS.c.id == bindparam("job_id"))
_RUNNING_AND_DONE = select(_BATCHES.c.id).where(
    _BATCHES.c.id == bindparam("batch_id"),
    _BATCHES.c.state == BatchState.RUNNING.value,
    ~select(JOBS.c.id).where(JOBS.c.batch_id == bindparam("batch_id"), JOBS.c.state.in_(UNFINISHED)).exists(),
)


def finish_batch_if_done(runtime: Runtime, batch_id: int) -> bool:
    """Finish the batch if it is running and none of its jobs is unfinished; whether this call did.

    Called at each job's end, so the common answer (some job is still on its way) is one query that
    stops at the first unfinished job it finds through the index that leads with ``(batch_id, state)``, never a count
    over the batch: a batch of n jobs costs O(n) in all, not O(n^2). Jobs are counted by state only
    once none is left unfinished. Each caller asks after its own job's move is committed, so of two
    jobs ending at once the later to ask sees both final, and the batch is finished by one of them.
    """
    with runtime.engine.connect() as connection:
        done = connection.execute(_RUNNING_AND_DONE, {"batch_id": batch_id}).first()
    if done is None:  # not running, or a job of it is still on its way
        return False
    with Session(runtime.engine) as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        counts = dict(
            session.exec(
                select(Job.state, func.count()).where(col(Job.batch_id) == batch_id).group_by(col(Job.state))
            ).all()
        )
    if any(state not in FINAL for state in counts):
        return False
    if batch.canceled is not None:
        state = BatchState.CANCELED
    else:
        state = BatchState.SUCCEEDED if set(counts) <= {JobState.SUCCEEDED.value} else BatchState.FAILED
    claim = f"genq:finishing:{batch_id}"
    if not _claim(runtime, claim):
        return False
    try:
        results_key = write_outputs(runtime, batch)
        with session_scope(runtime.engine) as session:
            moved = session.execute(
                update(Batch)
                .where(col(Batch.id) == batch_id, col(Batch.state) == BatchState.RUNNING.value)
                .values(state=state.value, finished_at=utcnow(), manifest_key=results_key)
            )
            return bool(moved.rowcount == 1)  # type: ignore[attr-defined]
    finally:
        _release(runtime, claim)


def _claim(runtime: Runtime, claim: str) -> bool:
    """Whether this worker may write the batch's outputs now; without Redis, it may (the same bytes)."""
    try:
        with talking_to_redis("claiming a batch's finish"):
            return bool(runtime.redis.set(claim, holder_id(), nx=True, ex=FINISHING_SECONDS))
    except RedisUnavailable:
        return True


def _release(runtime: Runtime, claim: str) -> None:
    try:
        with talking_to_redis("releasing a batch's finish"):
            runtime.redis.delete(claim)
    except RedisUnavailable:
        log.warning("the claim %s was not released; it runs out in %d s", claim, FINISHING_SECONDS)


def write_outputs(runtime: Runtime, batch: Batch) -> str:
    """Sheets, results and the report of a batch whose jobs are all final; the key of ``results.jsonl``.
    A sheet or a report that cannot be made is said in the log and never keeps the batch open."""
    assert batch.id is not None
    with Session(runtime.engine) as session:  # read once for all three
        jobs = session.exec(select(Job).where(col(Job.batch_id) == batch.id).order_by(col(Job.seq))).all()
    try:
        write_sheets(runtime.storage, batch, plan_sheets(runtime.engine, batch.id, frames_expected, jobs))
    except GenqError as error:
        log.warning("batch %d: its sprite sheets could not be made: %s", batch.id, error)
    results = row_results(runtime.engine, batch.id, credits=credits_spent, sheet_of=sheet_of, jobs=jobs)
    key = write_results(runtime.storage, batch, results)
    try:
        write_report(runtime.engine, runtime.storage, batch.id, run_figures(runtime, batch, results, jobs))
    except GenqError as error:
        log.warning("batch %d: its report could not be written: %s", batch.id, error)
    return key


def run_figures(
    runtime: Runtime, batch: Batch, results: Sequence[RowResult], jobs: Sequence[Job] | None = None
) -> RunFigures:
    """Planned beside spent, for the report. The plan is made again from the rows at each provider's
    typical time (what ``genq plan`` says before anything was learned); requests spent are each
    submitted row's submit requests and its tasks' polls; 429s are the turned-away requests recorded.
    ``jobs``: the batch's jobs in order, where the caller has read them already."""
    assert batch.id is not None
    with Session(runtime.engine) as session:
        if jobs is None:
            jobs = session.exec(select(Job).where(col(Job.batch_id) == batch.id).order_by(col(Job.seq))).all()
        polls = dict(
            session.exec(
                select(ProviderTask.job_id, func.sum(col(ProviderTask.polls)))
                .join(Job, col(Job.id) == col(ProviderTask.job_id))
                .where(col(Job.batch_id) == batch.id)
                .group_by(col(ProviderTask.job_id))
            ).all()
        )
        turned_away = session.exec(
            select(JobEvent.detail)
            .join(Job, col(Job.id) == col(JobEvent.job_id))
            .where(col(Job.batch_id) == batch.id, col(JobEvent.event) == RATE_LIMITED)
        ).all()
    requests: dict[str, int] = {}
    for job in jobs:
        if job.account is None or job.id not in polls:
            continue
        cost = _cost(job)
        sent = (cost.requests if cost is not None else 1) + job.attempts + int(polls[job.id] or 0)
        requests[job.account] = requests.get(job.account, 0) + sent
    limited: dict[str, int] = {}
    for detail in turned_away:
        account = detail.split(":", 1)[0]
        limited[account] = limited.get(account, 0) + 1
    planned = _planned(runtime, batch, jobs)
    return RunFigures(
        planned_requests=planned.requests if planned else None,
        planned_credits=planned.credits if planned else None,
        planned_seconds=planned.seconds if planned and math.isfinite(planned.seconds) else None,
        spent_requests=sum(requests.values()),
        spent_credits=sum(result.credits for result in results),
        accounts=tuple(
            AccountFigures(name, requests=requests.get(name, 0), rate_limited=limited.get(name, 0), paused_seconds=None)
            for name in sorted(set(requests) | set(limited))
        ),
    )


def _planned(runtime: Runtime, batch: Batch, jobs: Sequence[Job]) -> Plan | None:
    try:
        spec = retry_spec(batch, jobs)
    except ValidationError:
        return None
    return plan_batch(spec, runtime.accounts, lambda provider, _model: ADAPTERS[provider].typical_seconds,
                      spread=runtime.settings.rate_spread)  # fmt: skip


def frames_expected(job: Job) -> int:
    """The pictures a job makes (a sprite mode's frames), so a failed one still holds its cells."""
    cost = _cost(job)
    return cost.pictures if cost is not None else 1


def credits_spent(job: Job, pictures: int) -> int:
    """What a job that got its pictures was charged: what the provider said, else its price."""
    if job.credits is not None:
        return job.credits
    cost = _cost(job)
    return cost.credits if cost is not None else pictures


def _cost(job: Job) -> Cost | None:
    """The job's price by its adapter; None for a row no adapter can read (an older genq's, say)."""
    adapter = ADAPTERS.get(job.provider)
    try:
        return adapter.cost(JobSpec.model_validate(job.spec)) if adapter else None
    except ValidationError:
        return None
