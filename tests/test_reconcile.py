"""The reconciler, from the database alone: a live call is left alone while its lease runs and its
holder beats; a dead holder's job is taken at once; a lease run out is a lost answer; a queued job
whose message was lost is sent again; a running job whose provider tasks have all ended (the poll or
collect message that would have moved it was lost) is moved on, and its batch ends."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.models import Asset, Batch, Job, ProviderTask, utcnow
from jobs.settings import Settings
from workers import keys, liveness
from workers.collect import collect_job
from workers.reconcile import LOST_IN_FLIGHT, NO_ANSWER, reconcile
from workers.runtime import Runtime

SPEC = {"prompt": "a red kite", "provider": "gencraft"}


def runtime_at(tmp_path: Path, database_url: str, redis_url: str, base_url: str) -> Runtime:
    account = {"name": "gc", "provider": "gencraft", "api_key_env": "GENQ_TEST_RECONCILE_KEY",
               "base_url": base_url, "rpm": 60, "max_in_flight": 8}  # fmt: skip
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump({"accounts": [account]}))
    return Runtime(Settings(database_url=database_url, redis_url=redis_url, var_dir=tmp_path,
                            accounts=tmp_path / "accounts.yaml"))  # fmt: skip


@pytest.fixture
def runtime(tmp_path: Path, engine, database_url: str, clean_redis: str, monkeypatch) -> Runtime:
    monkeypatch.setenv("GENQ_TEST_RECONCILE_KEY", "k")
    runtime = runtime_at(tmp_path, database_url, clean_redis, "http://127.0.0.1:9")
    yield runtime
    runtime.close()


@pytest.fixture
def sandbox_runtime(tmp_path: Path, engine, database_url: str, clean_redis: str, sandbox_server,
                    monkeypatch) -> Runtime:  # fmt: skip
    """An account on the sandbox, whose sample pictures a collect can download."""
    monkeypatch.setenv("GENQ_TEST_RECONCILE_KEY", "k")
    runtime = runtime_at(tmp_path, database_url, clean_redis, sandbox_server.base_url("gencraft"))
    yield runtime
    runtime.close()


def job_in(engine, state: str, **values: object) -> int:
    with session_scope(engine) as session:
        batch = Batch(name="r", source="r.yaml", content_hash=f"r-{state}-{values}", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider="gencraft", spec=SPEC, state=state, account="gc",
                  **values)  # fmt: skip
        session.add(job)
        session.flush()
        assert job.id is not None
        return job.id


def running_job(engine, tasks: list[tuple[str, str | None]]) -> tuple[int, int]:
    """A batch of one running job with these provider tasks, each (state, picture URL or failure
    reason); (batch id, job id)."""
    with session_scope(engine) as session:
        batch = Batch(name="r", source="r.yaml", content_hash=f"r-running-{tasks}", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider="gencraft", spec=SPEC, state="running",
                  account="gc")  # fmt: skip
        session.add(job)
        session.flush()
        for index, (state, detail) in enumerate(tasks):
            ended = state != "running"
            session.add(ProviderTask(job_id=job.id, index=index, account="gc", provider="gencraft",
                                     remote_id=f"task_{index}", state=state,
                                     images=[{"url": detail}] if state == "succeeded" else [],
                                     error=detail if state == "failed" else None,
                                     finished_at=utcnow() if ended else None))  # fmt: skip
        assert batch.id is not None and job.id is not None
        return batch.id, job.id


def batch_state(engine, batch_id: int) -> str:
    with Session(engine) as session:
        batch = session.get(Batch, batch_id)
    assert batch is not None
    return batch.state


def stored(engine, job_id: int) -> Job:
    with Session(engine) as session:
        job = session.get(Job, job_id)
    assert job is not None
    return job


def test_a_live_call_is_left_alone_and_a_dead_holders_is_taken_at_once(runtime, engine, monkeypatch):
    # Redis was just started by the suite: let a heartbeat count as missing all the same.
    monkeypatch.setattr(liveness, "HEARTBEAT_TTL", 0.0)
    monkeypatch.setattr(liveness, "HEARTBEAT_EVERY", 0.0)
    long_lease = utcnow() + timedelta(seconds=300)  # talecraft's blocking call
    alive = job_in(engine, "submitting", holder="host:1:1", lease_until=long_lease)
    dead = job_in(engine, "submitting", holder="host:2:2", lease_until=long_lease)
    runtime.redis.set(keys.heartbeat("host:1:1"), 1, px=15_000)

    found = reconcile(runtime)

    assert found.uncertain == [dead]
    assert stored(engine, alive).state == "submitting"
    lost = stored(engine, dead)
    assert (lost.state, lost.error, lost.lost_answers) == ("uncertain", LOST_IN_FLIGHT, 1)


def test_a_pool_process_its_worker_saw_die_is_taken_at_once_and_no_strangers(runtime, engine, monkeypatch):
    # Redis was just started by the suite: let a heartbeat count as missing all the same.
    monkeypatch.setattr(liveness, "HEARTBEAT_TTL", 0.0)
    monkeypatch.setattr(liveness, "HEARTBEAT_EVERY", 0.0)
    host = socket.gethostname()
    ours = f"{host}:4242:1700000000000:{liveness.FAMILY}"
    stranger = f"{host}:4242:1700000000000:0123456789ab"  # same host name and pid, in another container
    lease = utcnow() + timedelta(seconds=300)
    dead = job_in(engine, "submitting", holder=ours, lease_until=lease)
    alive = job_in(engine, "submitting", holder=stranger, lease_until=lease)
    for holder in (ours, stranger):
        runtime.redis.set(keys.heartbeat(holder), 1, px=15_000)

    assert liveness.forget_child(runtime.redis, 4242) == [ours]
    assert liveness.forget_child(runtime.redis, 4243) == []

    assert reconcile(runtime).uncertain == [dead]
    assert stored(engine, dead).error == LOST_IN_FLIGHT
    assert stored(engine, alive).state == "submitting"


def test_no_heartbeat_counts_as_missing_while_redis_is_younger_than_a_heartbeat(runtime, engine, monkeypatch):
    monkeypatch.setattr(liveness, "HEARTBEAT_TTL", 10_000_000.0)  # as if Redis had just restarted empty
    job_id = job_in(engine, "submitting", holder="host:3:3", lease_until=utcnow() + timedelta(seconds=300))

    assert reconcile(runtime).uncertain == []
    assert stored(engine, job_id).state == "submitting"


def test_a_submit_past_its_lease_lost_its_answer(runtime, engine):
    job_id = job_in(engine, "submitting", holder="host:4:4", lease_until=utcnow() - timedelta(seconds=1))
    runtime.redis.set(keys.heartbeat("host:4:4"), 1, px=15_000)  # alive, but its call is over

    assert reconcile(runtime).uncertain == [job_id]
    assert stored(engine, job_id).error == NO_ANSWER


def test_a_queued_job_past_its_lease_is_sent_again_and_leased_anew(runtime, engine):
    waiting = job_in(engine, "queued", lease_until=utcnow() + timedelta(seconds=20))
    lost = job_in(engine, "queued", lease_until=utcnow() - timedelta(seconds=1))

    assert reconcile(runtime).resubmit == [lost]
    assert reconcile(runtime).resubmit == []  # its new message is on its way
    lease = stored(engine, lost).lease_until
    assert lease is not None and lease.replace(tzinfo=lease.tzinfo or utcnow().tzinfo) > utcnow()
    assert stored(engine, waiting).state == "queued"


def test_a_running_job_whose_tasks_all_succeeded_is_collected_and_its_batch_ends(sandbox_runtime, engine,
                                                                                 sandbox_server):  # fmt: skip
    # The poll that ended the last task died before the collect message was sent (or it was lost).
    pictures = [f"{sandbox_server.url}/_sandbox/samples/kite-{n}.png" for n in (1, 2)]
    batch_id, job_id = running_job(engine, [("succeeded", url) for url in pictures])
    _, still_polled = running_job(engine, [("succeeded", pictures[0]), ("running", None)])

    found = reconcile(sandbox_runtime)

    assert found.recollect == [job_id]
    assert stored(engine, job_id).state == "collecting"
    assert stored(engine, still_polled).state == "running"  # a task still runs: its poll moves it
    collect_job(sandbox_runtime, job_id)  # what the collect message the reconciler sends does
    assert reconcile(sandbox_runtime).finished_batches == [batch_id]
    assert stored(engine, job_id).state == "succeeded"
    assert batch_state(engine, batch_id) == "succeeded"
    with Session(engine) as session:
        assert len(session.exec(select(Asset).where(col(Asset.job_id) == job_id)).all()) == 2


def test_a_running_job_whose_tasks_all_failed_fails_and_its_batch_ends(runtime, engine):
    batch_id, job_id = running_job(engine, [("failed", "model overloaded"), ("failed", "prompt refused")])

    found = reconcile(runtime)

    assert found.failed == [job_id]
    assert found.finished_batches == [batch_id]
    failed = stored(engine, job_id)
    assert (failed.state, failed.error) == ("failed", "gc: model overloaded")
    assert batch_state(engine, batch_id) == "failed"
    assert reconcile(runtime).failed == []  # once
