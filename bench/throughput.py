"""Throughput: the pipeline's end-to-end rate beside a bare Celery no-op's, through the same broker,
with the same worker settings, in the same run; and their ratio.

The pipeline runs against the sandbox at zero latency with no rate limit, so what is measured is
genq's own cost per job: admission, submit, polls, download, checks, storage and records.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import yaml
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bench.fleet import scoped_environ
from jobs.batchfile import parse_batch
from jobs.db import make_engine, migrate
from jobs.models import Batch
from jobs.producer import produce
from jobs.redisserver import EmbeddedRedis, client_url
from jobs.settings import Settings
from jobs.states import BatchState
from jobs.status import batch_status

JOBS = int(os.environ.get("GENQ_BENCH_JOBS", "300"))
NOOPS = int(os.environ.get("GENQ_BENCH_NOOPS", "2000"))
CONCURRENCY = 8


def start_worker(app: str, env: dict[str, str], log: Path, *, beat: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "threads",
               "--concurrency", str(CONCURRENCY), "--queues", "control,submit,poll,collect",
               "--loglevel", "WARNING", "--without-mingle", "--without-gossip"]  # fmt: skip
    if beat:
        command += ["--beat", "--schedule", str(log.parent / "beat-schedule")]
    handle = open(log, "wb")  # noqa: SIM115
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_ready(client: redis.Redis, app_name: str, env: dict[str, str]) -> None:
    """Wait until a worker answers a ping through the broker."""
    from workers.app import make_app

    app = make_app(Settings(redis_url=env["GENQ_REDIS_URL"]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return
    raise SystemExit(f"{app_name} worker did not start")


def bench_noop(env: dict[str, str], work: Path) -> float:
    from bench.noop import COUNTER
    from bench.noop import app as noop_app

    client = redis.Redis.from_url(client_url(env["GENQ_REDIS_URL"]))
    client.delete(COUNTER)
    worker = start_worker("bench.noop", env, work / "noop.log", beat=False)
    try:
        wait_ready(client, "no-op", env)
        noop_app.conf.broker_url = env["GENQ_REDIS_URL"]
        started = time.perf_counter()
        for _ in range(NOOPS):
            noop_app.send_task("bench.noop", queue="control")
        while int(client.get(COUNTER) or 0) < NOOPS:
            time.sleep(0.01)
        return NOOPS / (time.perf_counter() - started)
    finally:
        stop(worker)


def bench_pipeline(env: dict[str, str], work: Path, sandbox_url: str) -> float:
    from workers.app import make_app

    accounts = {
        "accounts": [
            {"name": "bench-gencraft", "provider": "gencraft", "api_key_env": "GENQ_BENCH_KEY",
             "base_url": f"{sandbox_url}/gencraft", "rpm": 10_000_000, "max_in_flight": 100_000}
        ]
    }  # fmt: skip
    (work / "accounts.yaml").write_text(yaml.safe_dump(accounts))
    rows = "".join(f"bench picture {i},gencraft,1:1\n" for i in range(JOBS))
    spec = parse_batch(f"prompt,provider,aspect\n{rows}".encode(), "bench.csv")
    settings = Settings(database_url=env["GENQ_DATABASE_URL"], redis_url=env["GENQ_REDIS_URL"])
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    client = redis.Redis.from_url(client_url(env["GENQ_REDIS_URL"]))
    worker = start_worker("workers", env, work / "pipeline.log", beat=True)
    try:
        wait_ready(client, "genq", env)
        started = time.perf_counter()
        batch_id = produce(engine, spec).batch.id
        assert batch_id is not None
        make_app(settings).send_task("genq.dispatch")
        while batch_state(engine, batch_id) == BatchState.RUNNING:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        status = batch_status(engine, batch_id)
        if status.state != "succeeded":
            raise SystemExit(f"the bench batch did not succeed: {status.counts}")
        return JOBS / elapsed
    finally:
        stop(worker)


def batch_state(engine: Engine, batch_id: int) -> str | None:
    """The batch's state, in one read of one row: the bench watches for its end every 50 ms on the
    machine it measures, so it asks as little as it can (``batch_status`` counts every job)."""
    with Session(engine) as session:
        return session.exec(select(Batch.state).where(col(Batch.id) == batch_id)).first()


def main() -> dict[str, float]:
    from sandbox.config import SandboxConfig
    from sandbox.server import SandboxServer

    with tempfile.TemporaryDirectory(prefix="genq-bench-") as tmp:
        work = Path(tmp)
        with EmbeddedRedis(work / "redis") as server, SandboxServer(SandboxConfig(image_long_side=64)) as sandbox:
            env = {
                "GENQ_REDIS_URL": os.environ.get("GENQ_BENCH_REDIS_URL", server.url),
                "GENQ_DATABASE_URL": os.environ.get("GENQ_BENCH_DATABASE_URL", f"sqlite:///{work / 'bench.db'}"),
                "GENQ_STORAGE_URL": f"file://{work / 'objects'}",
                "GENQ_ACCOUNTS": str(work / "accounts.yaml"),
                "GENQ_VAR_DIR": str(work / "var"),
                "GENQ_BENCH_KEY": "bench-key",
                "GENQ_FIRST_POLL_DELAY": "0.2",
                "GENQ_DISPATCH_INTERVAL": "0.5",
                "GENQ_SWEEP_INTERVAL": "0.2",
            }
            with scoped_environ(env):
                noop = bench_noop(env, work)
                pipeline = bench_pipeline(env, work, sandbox.url)
    print("genq bench: throughput through one broker, one worker process, 8 threads")
    print(f"  bare Celery no-op task     {noop:9.1f} tasks/s  ({NOOPS} tasks)")
    print(f"  genq pipeline, end to end  {pipeline:9.1f} jobs/s   ({JOBS} jobs: submit, poll, collect, store)")
    print(f"  ratio pipeline / no-op     {pipeline / noop:9.3f}   (goal 0.25 or more)")
    return {"noop_tasks_per_s": noop, "pipeline_jobs_per_s": pipeline, "pipeline_over_noop": pipeline / noop}
