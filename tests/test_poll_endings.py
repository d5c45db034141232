"""Polls end: a task the provider does not know, a key revoked mid-run, an account removed from the
accounts file, answers that cannot be read, a task too old. In each case the job fails with the
reason and its batch ends, with no poll sent forever."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import yaml
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.models import Asset, Batch, Job, ProviderTask, utcnow
from jobs.settings import Settings
from tests.rawhttp import RawServer, answer
from workers.collect import collect_job
from workers.finish import finish_batch_if_done
from workers.polling import PollResult, due_polls, end_task, poll_tasks
from workers.providers.base import Finished, Image, TaskFailed
from workers.reconcile import reconcile
from workers.runtime import Runtime

ACCOUNT = "gc"


def gencraft_runtime(tmp_path: Path, base_url: str, database_url: str, redis_url: str, **settings: object) -> Runtime:
    account = {"name": ACCOUNT, "provider": "gencraft", "api_key_env": "GENQ_TEST_POLL_KEY", "base_url": base_url,
               "rpm": 600, "max_in_flight": 4}  # fmt: skip
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": [account]}))
    return Runtime(Settings(database_url=database_url, redis_url=redis_url, accounts=path, var_dir=tmp_path,
                            storage_url="memory://", **settings))  # type: ignore[arg-type]  # fmt: skip


def running_job(engine, remote_ids: list[str], *, account: str = ACCOUNT, age: float = 0.0) -> tuple[int, int]:
    """A batch of one running gencraft job with these provider tasks, due now; (batch id, job id)."""
    submitted = utcnow() - timedelta(seconds=age)
    with session_scope(engine) as session:
        batch = Batch(name="polls", source="polls.yaml", content_hash="polls", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider="gencraft", spec={"prompt": "a kite"}, state="running",
                  account=account)  # fmt: skip
        session.add(job)
        session.flush()
        for index, remote_id in enumerate(remote_ids):
            session.add(ProviderTask(job_id=job.id, index=index, account=account, provider="gencraft",
                                     remote_id=remote_id, submitted_at=submitted, next_poll_at=submitted))  # fmt: skip
        assert batch.id is not None and job.id is not None
        return batch.id, job.id


def poll_all_due(runtime: Runtime) -> None:
    for group in due_polls(runtime):
        poll_tasks(runtime, group)


def ended(runtime: Runtime, batch_id: int, job_id: int) -> Job:
    """The job, after the batch was given its chance to finish: it must have."""
    finish_batch_if_done(runtime, batch_id)
    with Session(runtime.engine) as session:
        job = session.get(Job, job_id)
        batch = session.get(Batch, batch_id)
        tasks = session.exec(select(ProviderTask).where(col(ProviderTask.job_id) == job_id)).all()
    assert job is not None and batch is not None
    assert batch.state == "failed", (job.state, job.error)
    assert all(task.state != "running" for task in tasks)
    return job


def polls_seen(sandbox_server) -> int:
    return sum(1 for r in sandbox_server.stats()["requests"] if r["kind"] in ("poll", "poll_many"))


def test_a_task_the_provider_does_not_know_fails_its_job(tmp_path, engine, database_url, clean_redis, sandbox_server,
                                                          monkeypatch):  # fmt: skip
    monkeypatch.setenv("GENQ_TEST_POLL_KEY", "sk-polls")
    sandbox_server.reset()
    runtime = gencraft_runtime(tmp_path, sandbox_server.base_url("gencraft"), database_url, clean_redis)
    single = running_job(engine, ["task_dropped"])
    with Session(engine) as session:  # one task on its own: GET /api/v1/tasks/{id} answers 404
        [task_id] = session.exec(select(ProviderTask.id).where(col(ProviderTask.job_id) == single[1])).all()
    poll_tasks(runtime, [task_id])
    several = running_job(engine, ["task_gone_1", "task_gone_2"])  # asked together: failed entries

    poll_all_due(runtime)

    for batch_id, job_id in (single, several):
        job = ended(runtime, batch_id, job_id)
        assert job.state == "failed" and "not found" in (job.error or "")
    assert polls_seen(sandbox_server) == 2
    runtime.close()


def test_a_key_revoked_mid_run_takes_the_account_out_and_its_tasks_end_with_their_age(
    tmp_path, engine, database_url, clean_redis, sandbox_server, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_POLL_KEY", "invalid-revoked-key")
    sandbox_server.reset()
    runtime = gencraft_runtime(tmp_path, sandbox_server.base_url("gencraft"), database_url, clean_redis,
                               rotation_pause=0.5, max_task_age=1.5)  # fmt: skip
    batch_id, job_id = running_job(engine, ["task_1"])

    poll_all_due(runtime)

    standing = runtime.limiter.standing(ACCOUNT)
    assert standing.out_of_rotation and standing.reason == "the provider refused its key"
    with Session(engine) as session:
        assert session.get(Job, job_id).state == "running"  # waiting for the key to come back
    time.sleep(1.6)
    poll_all_due(runtime)  # past its age: failed without asking

    job = ended(runtime, batch_id, job_id)
    assert "still running after" in (job.error or "")
    assert polls_seen(sandbox_server) == 1
    assert "invalid-revoked-key" not in (job.error or "")
    runtime.close()


def test_a_task_of_an_account_no_longer_configured_fails(tmp_path, engine, database_url, clean_redis, sandbox_server,
                                                          monkeypatch):  # fmt: skip
    monkeypatch.setenv("GENQ_TEST_POLL_KEY", "sk-polls")
    runtime = gencraft_runtime(tmp_path, sandbox_server.base_url("gencraft"), database_url, clean_redis)
    by_poll = running_job(engine, ["task_1"], account="removed")
    by_reconciler = running_job(engine, ["task_2"], account="removed-too")
    with session_scope(engine) as session:  # this one's poll is not due: only the reconciler finds it
        task = session.exec(select(ProviderTask).where(col(ProviderTask.remote_id) == "task_2")).one()
        task.next_poll_at = utcnow() + timedelta(hours=1)

    poll_all_due(runtime)
    found = reconcile(runtime)

    for (batch_id, job_id), account in ((by_poll, "removed"), (by_reconciler, "removed-too")):
        job = ended(runtime, batch_id, job_id)
        assert job.error is not None and f"account {account} is no longer in the accounts file" in job.error
    assert by_reconciler[1] in found.failed
    runtime.close()


def test_answers_that_cannot_be_read_are_asked_again_a_few_times_then_the_task_fails(
    tmp_path, engine, database_url, clean_redis, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_POLL_KEY", "sk-polls")
    with RawServer(answer("200 OK", b"<html>maintenance</html>")) as server:
        runtime = gencraft_runtime(tmp_path, server.url, database_url, clean_redis, poll_error_limit=3)
        batch_id, job_id = running_job(engine, ["task_1"])

        for attempt in range(3):
            with Session(engine) as session:
                assert session.get(Job, job_id).state == "running", f"failed at once, after {attempt} polls"
            with session_scope(engine) as session:
                session.exec(select(ProviderTask)).one().next_poll_at = utcnow()
            poll_all_due(runtime)

        job = ended(runtime, batch_id, job_id)
        assert "3 polls in a row could not be read" in (job.error or "")
        assert server.requests == 3
        runtime.close()


def test_a_task_past_its_age_fails_without_a_poll(tmp_path, engine, database_url, clean_redis, sandbox_server,
                                                  monkeypatch):  # fmt: skip
    monkeypatch.setenv("GENQ_TEST_POLL_KEY", "sk-polls")
    sandbox_server.reset()
    runtime = gencraft_runtime(tmp_path, sandbox_server.base_url("gencraft"), database_url, clean_redis,
                               max_task_age=600)  # fmt: skip
    batch_id, job_id = running_job(engine, ["task_old"], age=601)

    poll_all_due(runtime)

    job = ended(runtime, batch_id, job_id)
    assert "still running after 601 s" in (job.error or "")
    assert polls_seen(sandbox_server) == 0
    runtime.close()


def test_a_picture_made_beside_a_failed_sibling_is_kept_and_the_job_fails_for_the_other(
    tmp_path, engine, database_url, clean_redis, sandbox_server, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_POLL_KEY", "sk-polls")
    runtime = gencraft_runtime(tmp_path, sandbox_server.base_url("gencraft"), database_url, clean_redis)
    batch_id, job_id = running_job(engine, ["task_made", "task_failed"])
    with Session(engine) as session:
        made, failed = session.exec(select(ProviderTask).order_by(col(ProviderTask.index))).all()
    result = PollResult()

    end_task(runtime, failed, TaskFailed("model overloaded"), result)
    assert (result.ready, result.failed) == ([], [])  # its sibling still runs: nothing decided yet
    end_task(runtime, made, Finished((Image(f"{sandbox_server.url}/_sandbox/samples/made.png"),)), result)
    assert result.ready == [job_id]
    collect_job(runtime, job_id)

    job = ended(runtime, batch_id, job_id)
    assert job.state == "failed" and job.error == "1 of 2 tasks made no picture: gc: model overloaded"
    with Session(engine) as session:
        assert len(session.exec(select(Asset).where(col(Asset.job_id) == job_id)).all()) == 1
    runtime.close()
