"""Shared fixtures: real Redis, real databases (SQLite always, PostgreSQL when configured), the
sandbox over HTTP, and real ``celery worker`` processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from sqlalchemy import Engine, text

from jobs.db import make_engine, migrate
from jobs.redisserver import EmbeddedRedis, client_url
from jobs.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_KEY = "sandbox-test-key"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """GENQ_TEST_REDIS_URL when set (CI), else a private redis-server for the session."""
    configured = os.environ.get("GENQ_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    redis.Redis.from_url(client_url(redis_url)).flushdb()
    return redis_url


def _database_params() -> list[str]:
    return ["sqlite", "postgres"] if os.environ.get("GENQ_TEST_DATABASE_URL") else ["sqlite"]


@pytest.fixture(params=_database_params())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a schema of its own on the PostgreSQL given."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'genq.db'}"
        return
    with postgres_schema(os.environ["GENQ_TEST_DATABASE_URL"]) as url:
        yield url


@contextlib.contextmanager
def postgres_schema(base: str, prefix: str = "genq_test") -> Iterator[str]:
    """A URL of the PostgreSQL at ``base`` whose tables go into a schema of their own, dropped after."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sandbox_server() -> Iterator[object]:
    from sandbox.config import SandboxConfig
    from sandbox.server import SandboxServer

    server = SandboxServer(SandboxConfig(image_long_side=128))
    server.start()
    yield server
    server.stop()


def write_accounts(path: Path, base_urls: dict[str, str], *, rpm: int = 600, max_in_flight: int = 16) -> Path:
    accounts = [
        {
            "name": f"test-{provider}",
            "provider": provider,
            "api_key_env": "GENQ_TEST_SANDBOX_KEY",
            "base_url": url,
            "rpm": rpm,
            "max_in_flight": max_in_flight,
        }
        for provider, url in base_urls.items()
    ]
    path.write_text(yaml.safe_dump({"accounts": accounts}))
    return path


@pytest.fixture
def genq_env(
    tmp_path: Path, clean_redis: str, database_url: str, sandbox_server: object, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Environment for genq processes of one test: its own database, storage, Redis and accounts."""
    accounts = write_accounts(tmp_path / "accounts.yaml", {"gencraft": sandbox_server.base_url("gencraft")})  # type: ignore[attr-defined]
    env = {
        "GENQ_VAR_DIR": str(tmp_path / "var"),
        "GENQ_DATABASE_URL": database_url,
        "GENQ_REDIS_URL": clean_redis,
        "GENQ_STORAGE_URL": f"file://{tmp_path / 'objects'}",
        "GENQ_ACCOUNTS": str(accounts),
        "GENQ_TEST_SANDBOX_KEY": SANDBOX_KEY,
        "GENQ_FIRST_POLL_DELAY": "0.3",
        "GENQ_DISPATCH_INTERVAL": "0.5",
        "GENQ_SWEEP_INTERVAL": "0.3",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def settings_from(env: dict[str, str]) -> Settings:
    return Settings(
        var_dir=Path(env["GENQ_VAR_DIR"]),
        database_url=env["GENQ_DATABASE_URL"],
        redis_url=env["GENQ_REDIS_URL"],
        storage_url=env["GENQ_STORAGE_URL"],
        accounts=Path(env["GENQ_ACCOUNTS"]),
        first_poll_delay=float(env["GENQ_FIRST_POLL_DELAY"]),
    )


class WorkerProcess:
    """A real ``celery -A workers worker`` subprocess, stopped when the test ends."""

    def __init__(self, env: dict[str, str], log: Path, *, beat: bool = True, concurrency: int = 4) -> None:
        command = [
            sys.executable, "-m", "celery", "-A", "workers", "worker",
            "--queues", "control,submit,poll,collect", "--pool", "threads", "--concurrency", str(concurrency),
            "--loglevel", "INFO", "--hostname", f"test-{uuid.uuid4().hex[:6]}@%h",
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        if beat:
            command += ["--beat", "--schedule", str(log.parent / "celerybeat-schedule")]
        self.log = log
        handle = open(log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT
        )
        handle.close()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log.read_text()[-4000:]}")
            if b"ready." in self.log.read_bytes():
                return
            time.sleep(0.1)
        raise AssertionError(f"worker not ready in {timeout} s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_worker(tmp_path: Path, genq_env: dict[str, str]) -> Iterator[object]:
    started: list[WorkerProcess] = []

    def start(**options: object) -> WorkerProcess:
        worker = WorkerProcess(genq_env, tmp_path / f"worker-{len(started)}.log", **options)  # type: ignore[arg-type]
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()
