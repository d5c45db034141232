"""A prefork worker whose pool process dies mid-submit (SIGKILL, the out-of-memory killer) has the
job that process held taken at once: its main process drops the dead one's heartbeat and wakes the
reconciler, well before the heartbeat would have run out by itself."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml
from sqlmodel import Session, col, select

from jobs.batchfile import load_batch
from jobs.models import Job, JobEvent
from jobs.producer import produce
from jobs.redisserver import client_url
from tests.conftest import ROOT
from workers import liveness
from workers.reconcile import LOST_IN_FLIGHT

WAIT = 60.0
"""Seconds; the bound of every wait, never a measured threshold."""
EARLIEST_HEARTBEAT_END = liveness.HEARTBEAT_TTL - liveness.HEARTBEAT_EVERY
"""Seconds after a kill before which the dead process's heartbeat cannot have run out by itself: it
was written at most ``HEARTBEAT_EVERY`` before the kill and lives ``HEARTBEAT_TTL``."""


@pytest.fixture
def prefork_worker(
    tmp_path: Path, genq_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``celery worker`` with a prefork pool of two and its beat; the reconciler's own schedule is
    an hour, so only a wake-up can make it take a job within the test."""
    env = {**genq_env, "GENQ_RECONCILE_INTERVAL": "3600", "GENQ_HTTP_TIMEOUT": "40"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = [
        sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "prefork", "--concurrency", "2",
        "--queues", "control,submit,poll,collect", "--loglevel", "INFO",
        "--hostname", f"lost-{uuid.uuid4().hex[:6]}@%h", "--without-mingle", "--without-gossip",
        "--beat", "--schedule", str(tmp_path / "celerybeat-schedule"),
    ]  # fmt: skip
    log = tmp_path / "worker.log"
    with log.open("wb") as handle:
        # A session of its own: should the worker have to be killed, its pool processes go with it.
        worker = subprocess.Popen(command, env={**os.environ, **env}, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        wait_for("the worker to start", lambda: b"ready." in log.read_bytes(), worker, log)
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        with contextlib.suppress(ProcessLookupError):  # a pool process its main process left behind
            os.killpg(worker.pid, signal.SIGKILL)


def wait_for(what: str, condition: Callable[[], object], worker: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise AssertionError(f"worker exited waiting for {what}:\n{log.read_text(errors='replace')[-4000:]}")
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {WAIT:.0f} s:\n{log.read_text(errors='replace')[-4000:]}")


def test_a_pool_process_killed_mid_submit_has_its_job_taken_at_once(tmp_path, engine, genq_env, sandbox_server,
                                                                    prefork_worker):  # fmt: skip
    log = tmp_path / "worker.log"
    sandbox_server.configure("gencraft", timeout_rate=1.0, hang_seconds=120.0)  # the paid call is held open
    server = redis.Redis.from_url(client_url(genq_env["GENQ_REDIS_URL"]))
    # A Redis younger than a heartbeat judges no process dead (it may have lost every heartbeat).
    wait_for("Redis to be older than a heartbeat",
             lambda: server.info("server")["uptime_in_seconds"] >= liveness.HEARTBEAT_TTL + liveness.HEARTBEAT_EVERY,
             prefork_worker, log)  # fmt: skip
    batch = tmp_path / "one.yaml"
    batch.write_text(yaml.safe_dump({"name": "one", "jobs": [{"prompt": "a red kite", "provider": "gencraft"}]}))
    batch_id = produce(engine, load_batch(batch)).batch.id
    with Session(engine) as session:
        job_id = session.exec(select(Job.id).where(col(Job.batch_id) == batch_id)).one()

    def holder() -> str | None:
        with Session(engine) as session:
            job = session.get(Job, job_id)
        return job.holder if job is not None and job.state == "submitting" else None

    wait_for("the job to be in a pool process's call", holder, prefork_worker, log)
    held_by = holder()
    assert held_by is not None
    pid = int(held_by.split(":")[1])
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def lost() -> list[JobEvent]:
        with Session(engine) as session:
            return list(session.exec(select(JobEvent).where(col(JobEvent.job_id) == job_id,
                                                            col(JobEvent.event) == "answer lost")).all())  # fmt: skip

    wait_for("the job to be taken from the dead process", lost, prefork_worker, log)
    taken_after = time.monotonic() - killed_at
    assert [event.detail for event in lost()] == [LOST_IN_FLIGHT]
    assert taken_after < EARLIEST_HEARTBEAT_END, f"taken {taken_after:.1f} s after the kill"
    assert prefork_worker.poll() is None
