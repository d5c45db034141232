"""A poll that finds its key's allowance spent: nothing is sent, and it comes back when a request frees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from jobs.db import session_scope
from jobs.models import Batch, Job, ProviderTask, utcnow
from jobs.settings import Settings
from tests.conftest import write_accounts
from workers.polling import LEASE_SECONDS, due_polls, poll_tasks
from workers.runtime import Runtime

ACCOUNT = "test-girlgenerator"
RPM = 120
"""Paced over 10 s (the default): 25 requests may go at once, the 26th waits for the first to age out."""


def girlgenerator_runtime(tmp_path: Path, database_url: str, redis_url: str) -> Runtime:
    # Nothing listens on port 9: a poll that reached the network would fail, not pass unseen.
    accounts = write_accounts(tmp_path / "accounts.yaml", {"girlgenerator": "http://127.0.0.1:9"}, rpm=RPM)
    return Runtime(Settings(database_url=database_url, redis_url=redis_url, accounts=accounts, var_dir=tmp_path))


def running_task(engine) -> int:
    with session_scope(engine) as session:
        batch = Batch(name="b", source="b.csv", content_hash="b", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider="girlgenerator", spec={"prompt": "a cat"},
                  state="running", account=ACCOUNT)  # fmt: skip
        session.add(job)
        session.flush()
        task = ProviderTask(job_id=job.id, index=0, account=ACCOUNT, provider="girlgenerator", remote_id="t-1")
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
