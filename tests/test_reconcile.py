"""The reconciler, from the database alone: a live call is left alone while its lease runs and its
holder beats; a dead holder's job is taken at once; a lease run out is a lost answer; a queued job
whose message was lost is sent again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session

from jobs.db import session_scope
from jobs.models import Batch, Job, utcnow
from jobs.settings import Settings
from workers import keys, liveness
from workers.reconcile import LOST_IN_FLIGHT, NO_ANSWER, reconcile
from workers.runtime import Runtime


@pytest.fixture
def runtime(tmp_path: Path, engine, database_url: str, clean_redis: str, monkeypatch) -> Runtime:
    monkeypatch.setenv("GENQ_TEST_RECONCILE_KEY", "k")
    account = {"name": "gc", "provider": "gencraft", "api_key_env": "GENQ_TEST_RECONCILE_KEY",
               "base_url": "http://127.0.0.1:9", "rpm": 60, "max_in_flight": 8}  # fmt: skip
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump({"accounts": [account]}))
    runtime = Runtime(Settings(database_url=database_url, redis_url=clean_redis, var_dir=tmp_path,
                               accounts=tmp_path / "accounts.yaml"))  # fmt: skip
    yield runtime
    runtime.close()


def job_in(engine, state: str, **values: object) -> int:
    with session_scope(engine) as session:
        batch = Batch(name="r", source="r.yaml", content_hash=f"r-{state}-{values}", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider="gencraft", spec={"prompt": "a"}, state=state,
                  account="gc", **values)  # fmt: skip
        session.add(job)
        session.flush()
        assert job.id is not None
        return job.id


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
