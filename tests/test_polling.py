"""A poll that finds its key's allowance spent: nothing is sent, and it comes back when a request frees;
what it finds when it is sent is learned as of when it was due, not of when the allowance let it go.
A first poll comes at the provider's typical time while nothing is learned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.models import Batch, Job, ProviderTask, utcnow
from jobs.settings import Settings
from jobs.spec import JobSpec
from tests.conftest import write_accounts
from workers import keys
from workers.polling import LEASE_SECONDS, due_polls, poll_tasks
from workers.providers.base import Started
from workers.providers.girlgenerator import Girlgenerator
from workers.runtime import Runtime
from workers.submission import record_submitted

ACCOUNT = "test-girlgenerator"
RPM = 120
"""Paced over 10 s (the default): 25 requests may go at once, the 26th waits for the first to age out."""


def girlgenerator_runtime(
    tmp_path: Path, database_url: str, redis_url: str, base_url: str = "http://127.0.0.1:9", **settings: object
) -> Runtime:
    # By default nothing listens on port 9: a poll that reached the network would fail, not pass unseen.
    accounts = write_accounts(tmp_path / "accounts.yaml", {"girlgenerator": base_url}, rpm=RPM)
    return Runtime(Settings(database_url=database_url, redis_url=redis_url, accounts=accounts, var_dir=tmp_path,
                            **settings))  # type: ignore[arg-type]  # fmt: skip


def a_job(engine, state: str) -> Job:
    with session_scope(engine) as session:
        batch = Batch(name="b", source="b.csv", content_hash="b", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider="girlgenerator", spec={"prompt": "a cat"},
                  state=state, account=ACCOUNT)  # fmt: skip
        session.add(job)
        session.flush()
        session.expunge(job)
        return job


def running_task(engine, remote_id: str = "t-1", **values: object) -> int:
    job = a_job(engine, "running")
    with session_scope(engine) as session:
        task = ProviderTask(job_id=job.id, index=0, account=ACCOUNT, provider="girlgenerator", remote_id=remote_id,
                            **values)  # type: ignore[arg-type]  # fmt: skip
        session.add(task)
        session.flush()
        assert task.id is not None
        return task.id


def stored(engine, task_id: int) -> ProviderTask:
    with Session(engine) as session:
        task = session.get(ProviderTask, task_id)
    assert task is not None
    return task


def seconds_from_now(moment: datetime) -> float:
    return (moment.replace(tzinfo=moment.tzinfo or UTC) - utcnow()).total_seconds()


def test_a_poll_on_a_spent_key_is_sent_again_for_the_moment_a_request_frees(
    tmp_path, engine, database_url, monkeypatch, clean_redis
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    runtime = girlgenerator_runtime(tmp_path, database_url, clean_redis)
    task_id = running_task(engine)
    assert [runtime.limiter.acquire(ACCOUNT, RPM) for _ in range(25)] == [0] * 25

    found = poll_tasks(runtime, [task_id])

    assert found.wait is not None and 5 < found.wait <= 10
    task = stored(engine, task_id)
    assert task.polls == 0 and task.state == "running"  # no poll was made, none counted
    # Leased past the wait, so no sweep sends it a second time while it waits in the broker.
    assert seconds_from_now(task.next_poll_at) > found.wait + LEASE_SECONDS - 5
    assert due_polls(runtime) == []


def test_a_poll_on_a_paused_account_is_left_to_the_sweep_when_the_pause_ends(
    tmp_path, engine, database_url, monkeypatch, clean_redis
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    runtime = girlgenerator_runtime(tmp_path, database_url, clean_redis)
    task_id = running_task(engine)
    runtime.limiter.pause(ACCOUNT, 900, "rate limited by the provider (429)")

    found = poll_tasks(runtime, [task_id])

    assert found.wait is None and not found.ready and not found.failed
    task = stored(engine, task_id)
    assert task.polls == 0
    assert 890 < seconds_from_now(task.next_poll_at) <= 900
    with session_scope(engine) as session:  # the pause over: the sweep finds it due again
        session.get(ProviderTask, task_id).next_poll_at = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]
    assert due_polls(runtime) == [[task_id]]


def test_with_nothing_learned_a_first_poll_comes_at_the_providers_typical_time(
    tmp_path, engine, database_url, clean_redis, monkeypatch
):
    monkeypatch.delenv("GENQ_FIRST_POLL_DELAY", raising=False)
    runtime = girlgenerator_runtime(tmp_path, database_url, clean_redis)
    job = a_job(engine, "submitting")

    record_submitted(runtime, job, Started(task_ids=("t-1", "t-2")))

    with Session(engine) as session:
        tasks = session.exec(select(ProviderTask).where(col(ProviderTask.job_id) == job.id)).all()
    assert len(tasks) == 2
    for task in tasks:
        assert (task.next_poll_at - task.submitted_at).total_seconds() == Girlgenerator.typical_seconds
        assert task.poll_due_at == task.next_poll_at


def test_a_set_first_poll_delay_overrides_the_typical_time(tmp_path, engine, database_url, clean_redis):
    runtime = girlgenerator_runtime(tmp_path, database_url, clean_redis, first_poll_delay=0.3)
    job = a_job(engine, "submitting")

    record_submitted(runtime, job, Started(task_ids=("t-1",)))

    with Session(engine) as session:
        task = session.exec(select(ProviderTask).where(col(ProviderTask.job_id) == job.id)).one()
    assert (task.next_poll_at - task.submitted_at).total_seconds() == 0.3


def test_a_follow_up_that_waited_for_the_allowance_is_learned_as_of_when_it_was_due(
    tmp_path, engine, database_url, monkeypatch, clean_redis, sandbox_server
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "sandbox-key-of-polls")
    runtime = girlgenerator_runtime(tmp_path, database_url, clean_redis, sandbox_server.base_url("girlgenerator"))
    picture = runtime.provider(ACCOUNT).submit(JobSpec(prompt="a cat", provider="girlgenerator"))  # done at once
    assert isinstance(picture, Started)
    # Submitted 40 s ago; a poll found it running at 10 s, the follow-up was due at 12 s.
    submitted = utcnow() - timedelta(seconds=40)
    task_id = running_task(engine, picture.task_ids[0], polls=1, submitted_at=submitted,
                           last_polled_at=submitted + timedelta(seconds=10),
                           poll_due_at=submitted + timedelta(seconds=12))  # fmt: skip
    assert [runtime.limiter.acquire(ACCOUNT, RPM) for _ in range(25)] == [0] * 25

    waited = poll_tasks(runtime, [task_id])

    assert waited.wait is not None and not waited.ready
    task = stored(engine, task_id)
    assert task.poll_due_at == submitted + timedelta(seconds=12)  # the wait moved the poll, not its due time

    runtime.redis.delete(keys.rate_log(ACCOUNT))  # the allowance frees
    found = poll_tasks(runtime, [task_id])

    assert len(found.ready) == 1
    # Done between the poll that found it running (10 s) and the follow-up's due time (12 s), though
    # the follow-up ran at 40 s.
    assert runtime.timing.learned("girlgenerator", None) == 11.0


def test_a_poll_that_finds_a_task_running_schedules_the_next_and_says_when_it_is_due(
    tmp_path, engine, database_url, monkeypatch, clean_redis, sandbox_server
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "sandbox-key-of-polls")
    sandbox_server.configure("girlgenerator", latency_mean=600.0)
    runtime = girlgenerator_runtime(tmp_path, database_url, clean_redis, sandbox_server.base_url("girlgenerator"))
    picture = runtime.provider(ACCOUNT).submit(JobSpec(prompt="a cat", provider="girlgenerator"))
    assert isinstance(picture, Started)
    task_id = running_task(engine, picture.task_ids[0])
    before = utcnow()

    found = poll_tasks(runtime, [task_id])

    assert found.wait is None and not found.ready and not found.failed
    task = stored(engine, task_id)
    assert task.polls == 1
    assert task.last_polled_at is not None and before <= task.last_polled_at <= utcnow()
    assert task.poll_due_at == task.next_poll_at and task.next_poll_at > task.last_polled_at
