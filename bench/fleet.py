"""A whole deployment on this machine for a bench: Redis, the sandbox, a database, accounts, and
several ``celery worker`` processes; run a batch through it and read the sandbox's own record."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from jobs.batchfile import parse_batch
from jobs.db import make_engine, migrate
from jobs.embedded import sandbox_first_poll
from jobs.producer import produce
from jobs.redisserver import EmbeddedRedis, client_url
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
    keys: dict[str, str]
    """Each account's key, by account name: every account has a key of its own."""
    tokens: TokenLog

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

    def arrivals(self, account: str) -> list[float]:
        """When each request made with the account's key arrived at the sandbox, 429s included."""
        from sandbox.stats import key_id

        mine = key_id(self.keys[account])
        return sorted(r["t"] for r in self.sandbox.stats()["requests"] if r["key_id"] == mine)

    def keyed_requests(self, provider: str, since: float = 0.0) -> list[dict[str, Any]]:
        """Every request the sandbox saw made with a key of ``provider`` (downloads carry none)."""
        return [
            r for r in self.sandbox.stats()["requests"] if r["provider"] == provider and r["key_id"] and r["t"] >= since
        ]


class TokenLog:
    """Every rate-limit token the fleet takes, read from the limiter's own log in Redis (each entry
    scored by the Redis clock, this machine's, as the sandbox's request times are) every second,
    well before the log lets an entry go at the end of its minute."""

    def __init__(self, redis_url: str, accounts: Sequence[str]) -> None:
        from workers import keys

        self._client = redis.Redis.from_url(client_url(redis_url))
        self._logs = {account: keys.rate_log(account) for account in accounts}
        self._seen: dict[str, dict[bytes, float]] = {account: {} for account in accounts}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TokenLog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._read()

    def _read(self) -> None:
        with self._lock:
            for account, log in self._logs.items():
                entries: list[tuple[bytes, float]] = self._client.zrange(log, 0, -1, withscores=True)  # type: ignore[assignment]
                for member, score in entries:
                    self._seen[account][member] = score / 1000.0

    def times(self, account: str) -> list[float]:
        """Every token the account took so far, in time order."""
        self._read()
        return sorted(self._seen[account].values())


def token_to_arrival(tokens: Sequence[float], arrivals: Sequence[float]) -> list[float]:
    """Seconds from each request's token to its arrival at the provider, pairing the k-th token with
    the k-th arrival, both in time order. A token whose request never left would shift every pair
    after it by a request's spacing and show as lag: the figure cannot hide such a token."""
    return [arrival - token for token, arrival in zip(sorted(tokens), sorted(arrivals), strict=False)]


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
        keys = {a["name"]: f"bench-key-{n}" for n, a in enumerate(accounts)}
        key_envs = {f"{KEY_ENV}_{n}": keys[a["name"]] for n, a in enumerate(accounts)}
        full = [{"api_key_env": f"{KEY_ENV}_{n}", **sandbox.account_settings(a["provider"]), **a}
                for n, a in enumerate(accounts)]  # fmt: skip
        (work / "accounts.yaml").write_text(yaml.safe_dump({"accounts": full}))
        env = {
            "GENQ_REDIS_URL": redis_server.url,
            "GENQ_DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
            "GENQ_STORAGE_URL": f"file://{work / 'objects'}",
            "GENQ_ACCOUNTS": str(work / "accounts.yaml"),
            "GENQ_VAR_DIR": str(work / "var"),
            **key_envs,
            "GENQ_DISPATCH_INTERVAL": "0.5",
            "GENQ_SWEEP_INTERVAL": "0.25",
            # As ``genq run --sandbox``: a first wave is polled when the sandbox's pictures take, its
            # provider's typical time, unless a section sets its own.
            "GENQ_FIRST_POLL_DELAY": os.environ.get("GENQ_FIRST_POLL_DELAY", f"{sandbox_first_poll(config):g}"),
        }
        with scoped_environ(env):
            settings = Settings()
            migrate(make_engine(settings.resolved_database_url()))
            processes = [_worker(app, env, work / f"worker-{n}.log", beat=n == 0) for n in range(workers)]
            try:
                _wait_ready(processes, work)
                with TokenLog(redis_server.url, list(keys)) as tokens:
                    yield Fleet(work, env, sandbox, settings, keys, tokens)
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
