"""Every request of a key counts against its limit, polls included, unless its account says its polls
are free; and a 429 to any of them pauses the key for all of them until its Retry-After."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.models import Batch, Job, ProviderTask, utcnow
from jobs.settings import Settings
from workers.dispatch import dispatch
from workers.polling import poll_tasks
from workers.runtime import Runtime
from workers.submission import submit_job

ACCOUNT = "gc"


def gencraft_runtime(tmp_path: Path, database_url: str, redis_url: str, base_url: str, **account: object) -> Runtime:
    entry = {"name": ACCOUNT, "provider": "gencraft", "api_key_env": "GENQ_TEST_SANDBOX_KEY", "base_url": base_url,
             "rpm": 600, "max_in_flight": 100, **account}  # fmt: skip
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump({"accounts": [entry]}))
    return Runtime(Settings(database_url=database_url, redis_url=redis_url, accounts=tmp_path / "accounts.yaml",
                            var_dir=tmp_path))  # fmt: skip


def pending_jobs(engine, count: int) -> list[int]:
    with session_scope(engine) as session:
        batch = Batch(name="b", source="b.csv", content_hash="b", job_count=count)
        session.add(batch)
        session.flush()
        jobs = [Job(batch_id=batch.id, seq=i, line=i + 1, provider="gencraft",
                    spec={"prompt": f"a cat {i}", "provider": "gencraft"}) for i in range(count)]  # fmt: skip
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs if job.id is not None]


def running_tasks(engine, count: int) -> list[int]:
    """``count`` provider tasks of the account, running and due now (at a port where nothing listens)."""
    with session_scope(engine) as session:
        batch = Batch(name="r", source="r.csv", content_hash="r", job_count=count)
        session.add(batch)
        session.flush()
        tasks = []
        for i in range(count):
            job = Job(batch_id=batch.id, seq=i, line=i + 1, provider="gencraft", spec={"prompt": "a cat"},
                      state="running", account=ACCOUNT)  # fmt: skip
            session.add(job)
            session.flush()
            tasks.append(ProviderTask(job_id=job.id, index=0, account=ACCOUNT, provider="gencraft", remote_id=f"t-{i}"))
        session.add_all(tasks)
        session.flush()
        return [task.id for task in tasks if task.id is not None]


@pytest.mark.parametrize("polls_count", [None, False], ids=["polls counted", "polls free"])
def test_a_gencraft_429_on_a_poll_pauses_the_account_for_its_submits_and_polls(
    tmp_path, engine, database_url, clean_redis, sandbox_server, monkeypatch, polls_count
):
    # Given a gencraft key the provider allows one request a minute, spent on a submit.
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "sk-test")
    sandbox_server.reset()
    sandbox_server.configure("gencraft", rpm=1)
    runtime = gencraft_runtime(tmp_path, database_url, clean_redis, sandbox_server.base_url("gencraft"),
                               polls_count=polls_count)  # fmt: skip
    first, second = pending_jobs(engine, 2)
    assert sorted(dispatch(runtime)) == [first, second]
    submit_job(runtime, first)
    with Session(engine) as session:
        [task_id] = session.exec(select(ProviderTask.id).where(col(ProviderTask.job_id) == first)).all()

    # When its poll draws a 429 with a Retry-After,
    poll_tasks(runtime, [task_id])
    stats = httpx.get(f"{sandbox_server.url}/_sandbox/stats").json()
    [turned_away] = [r for r in stats["requests"] if r["status"] == 429]
    assert turned_away["kind"] == "poll"
    retry_after = runtime.limiter.standing(ACCOUNT).paused_for
    assert retry_after > 30  # the sandbox's minute, less the moments since the submit

    # then neither a submit nor a poll of the key is sent before it ends: both wait for it.
    after_submit = submit_job(runtime, second)
    after_poll = poll_tasks(runtime, [task_id])

    stats = httpx.get(f"{sandbox_server.url}/_sandbox/stats").json()
    assert [r for r in stats["requests"] if r["t"] > turned_away["t"]] == []
    assert after_submit.wait is not None and after_submit.wait > retry_after - 5
    assert after_poll.wait is None or after_poll.wait > retry_after - 5  # sent again when the pause ends
    with Session(engine) as session:
        job = session.get(Job, second)
        task = session.get(ProviderTask, task_id)
    assert job is not None and job.state == "queued" and job.lease_until is not None
    assert job.lease_until.replace(tzinfo=None) >= utcnow().replace(tzinfo=None) + timedelta(seconds=retry_after - 5)
    assert task is not None and task.state == "running" and task.polls == 0
    assert task.next_poll_at.replace(tzinfo=None) >= utcnow().replace(tzinfo=None) + timedelta(seconds=retry_after - 5)
    runtime.close()


@pytest.mark.parametrize(("polls_count", "taken"), [(None, {"poll": 1}), (False, {})], ids=["default", "free"])
def test_gencraft_polls_take_from_the_allowance_unless_the_account_says_they_are_free(
    tmp_path, engine, database_url, clean_redis, monkeypatch, polls_count, taken
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    # Nothing listens on port 9: the poll is sent (and fails to connect) either way.
    runtime = gencraft_runtime(tmp_path, database_url, clean_redis, "http://127.0.0.1:9", polls_count=polls_count)
    [task_id] = running_tasks(engine, 1)

    poll_tasks(runtime, [task_id])

    assert runtime.limiter.requests(ACCOUNT) == taken
    runtime.close()


@pytest.mark.parametrize(("polls_count", "claimed"), [(None, 8), (False, 10)], ids=["default", "free"])
def test_admission_leaves_room_for_gencraft_polls_due_unless_they_are_free(
    tmp_path, engine, database_url, clean_redis, monkeypatch, polls_count, claimed
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    runtime = gencraft_runtime(tmp_path, database_url, clean_redis, "http://127.0.0.1:9", rpm=10,
                               polls_count=polls_count)  # fmt: skip
    running_tasks(engine, 40)  # two polls of 20 ids due
    pending_jobs(engine, 20)

    assert len(dispatch(runtime)) == claimed
    runtime.close()
