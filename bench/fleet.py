"""A whole deployment on this machine for a bench: Redis, the sandbox, a database, accounts, and
several ``celery worker`` processes; run a batch through it and read the sandbox's own record."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jobs.batchfile import parse_batch
from jobs.db import make_engine, migrate
from jobs.producer import produce
from jobs.redisserver import EmbeddedRedis
from jobs.settings import Settings
from jobs.spec import BatchSpec
from jobs.status import BatchStatus, batch_status
from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer

KEY_ENV = "GENQ_BENCH_KEY"


@dataclass
class Fleet:
    work: Path
    env: dict[str, str]
    sandbox: SandboxServer
    settings: Settings

    def batch(self, name: str, rows: Sequence[str], provider: str) -> BatchSpec:
        body = "prompt,provider\n" + "".join(f"{row},{provider}\n" for row in rows)
        return parse_batch(body.encode(), f"{name}.csv")

    def run(self, spec: BatchSpec, timeout: float = 1800) -> tuple[BatchStatus, float]:
        """Submit and wait until the batch is final; its status and the seconds it took."""
        from workers.app import make_app

        engine = make_engine(self.settings.resolved_database_url())
        started = time.time()
        batch = produce(engine, spec, force=True).batch
        assert batch.id is not None
        make_app(self.settings).send_task("genq.dispatch")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = batch_status(engine, batch.id)
            if status.final:
                engine.dispose()
                return status, time.time() - started
            time.sleep(0.25)
        raise SystemExit(f"bench batch {spec.name} not final after {timeout} s: {batch_status(engine, batch.id)}")

    def keyed_requests(self, provider: str, since: float = 0.0) -> list[dict[str, Any]]:
        """Every request the sandbox saw made with a key of ``provider`` (downloads carry none)."""
        return [
            r for r in self.sandbox.stats()["requests"] if r["provider"] == provider and r["key_id"] and r["t"] >= since
        ]


@contextmanager
def scoped_environ(env: dict[str, str]) -> Iterator[None]:
    """``env`` set in this process (settings read it) for the block only: one section's settings,
    such as the throughput bench's quick first poll, must not leak into the next."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def fleet(
    config: SandboxConfig, accounts: list[dict[str, Any]], *, workers: int, app: str = "workers"
) -> Iterator[Fleet]:
    """``accounts``: name, provider, rpm, max_in_flight of each; base URLs point at the sandbox."""
    with (
        tempfile.TemporaryDirectory(prefix="genq-bench-") as tmp,
        EmbeddedRedis(Path(tmp) / "redis") as redis_server,
        SandboxServer(config) as sandbox,
    ):
        work = Path(tmp)
        full = [{"api_key_env": KEY_ENV, **sandbox.account_settings(a["provider"]), **a} for a in accounts]
        (work / "accounts.yaml").write_text(yaml.safe_dump({"accounts": full}))
        env = {
            "GENQ_REDIS_URL": redis_server.url,
            "GENQ_DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
            "GENQ_STORAGE_URL": f"file://{work / 'objects'}",
            "GENQ_ACCOUNTS": str(work / "accounts.yaml"),
            "GENQ_VAR_DIR": str(work / "var"),
            KEY_ENV: "bench-key",
            "GENQ_DISPATCH_INTERVAL": "0.5",
            "GENQ_SWEEP_INTERVAL": "0.25",
        }
        with scoped_environ(env):
            settings = Settings()
            migrate(make_engine(settings.resolved_database_url()))
            processes = [_worker(app, env, work / f"worker-{n}.log", beat=n == 0) for n in range(workers)]
            try:
                _wait_ready(processes, work)
                yield Fleet(work, env, sandbox, settings)
            finally:
                for process in processes:
                    process.terminate()
                for process in processes:
                    try:
                        process.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        process.kill()


def _worker(app: str, env: dict[str, str], log: Path, *, beat: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "threads", "--concurrency", "4",
               "--queues", "control,submit,poll,collect", "--loglevel", "INFO", "--without-mingle",
               "--without-gossip", "--hostname", f"{log.stem}@%h"]  # fmt: skip
    if beat:
        command += ["--beat", "--schedule", str(log.parent / "beat-schedule")]
    with open(log, "wb") as handle:
        return subprocess.Popen(command, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT)


def _wait_ready(processes: list[subprocess.Popen[bytes]], work: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [(work / f"worker-{n}.log").read_bytes() for n in range(len(processes))]
        if all(b"ready." in log for log in logs):
            return
        if any(process.poll() is not None for process in processes):
            break
        time.sleep(0.2)
    raise SystemExit(f"bench workers did not start; see the logs in {work}")
