"""The embedded stack of ``genq run``: whatever this machine lacks, started here and stopped after.

A private Redis when ``GENQ_REDIS_URL`` is unset, one ``celery worker`` process (with beat inside it)
serving every queue, and with ``sandbox`` the fake providers on loopback with accounts pointed at
them. Children get the resolved settings through their environment, so they see exactly what this
process sees.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from jobs.lifeline import lifeline_command
from jobs.redisserver import EmbeddedRedis
from jobs.settings import Settings

if TYPE_CHECKING:
    from sandbox.config import SandboxConfig

SANDBOX_KEY_ENV = "GENQ_SANDBOX_KEY"
SANDBOX_LOCAL_KEY = "sandbox-local-key"
"""The sandbox's key when none is set: the same every run, since the sandbox keeps its tasks per key."""
SANDBOX_IMAGE_SIDE = 512
"""Pixels on the long side of sandbox pictures in a run: the aspect is exact, the size is kept small."""


def sandbox_config() -> SandboxConfig:
    """The sandbox of a run: ``GENQ_SANDBOX_*`` as set, with small pictures unless a size is set."""
    from sandbox.config import SandboxConfig

    config = SandboxConfig.from_env()
    if config.image_long_side is None:
        config = config.model_copy(update={"image_long_side": SANDBOX_IMAGE_SIDE})
    return config


def sandbox_first_poll(config: SandboxConfig) -> float:
    """Seconds to a sandbox task's first poll before anything is learned: the sandbox's pictures take
    what its latency says, not a real provider's typical time, so a run on it is not kept waiting."""
    from jobs.spec import PROVIDERS

    slowest = max((config.provider(name).latency_mean for name in PROVIDERS), default=0.0)
    return max(slowest, 0.5)


def sandbox_accounts(
    config: SandboxConfig, url: str, providers: tuple[str, ...] | None = None
) -> list[dict[str, object]]:
    """One account per provider on the sandbox at ``url`` (every provider genq drives when None)."""
    from jobs.spec import PROVIDERS
    from sandbox.server import account_settings

    return [
        {
            "name": f"sandbox-{provider}",
            "provider": provider,
            "api_key_env": SANDBOX_KEY_ENV,
            "rpm": 600,
            "max_in_flight": 32,
            **account_settings(config, provider, f"{url}/{provider}"),
        }
        for provider in providers or PROVIDERS
    ]


class EmbeddedStack:
    def __init__(
        self,
        settings: Settings,
        *,
        sandbox: bool = False,
        concurrency: int = 8,
        providers: tuple[str, ...] | None = None,
    ) -> None:
        self.settings = settings
        self.use_sandbox = sandbox
        self.concurrency = concurrency
        self.providers = providers
        """The providers the sandbox's accounts cover; every provider genq can drive when None."""
        self.var_dir = settings.var_dir.resolve()
        self.redis: EmbeddedRedis | None = None
        self.sandbox_server: object | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.fresh_broker = False
        """True when this stack started the broker, so no message of an earlier run survives in it."""
        self.env: dict[str, str] = {}

    def start_services(self) -> Settings:
        """Start Redis and the sandbox as needed; the settings every process of this run should use."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        redis_url = self.settings.redis_url
        if not redis_url:
            self.redis = EmbeddedRedis(self.var_dir)
            redis_url = self.redis.start()
            self.fresh_broker = self.redis.process is not None
        accounts = self.settings.accounts
        if self.use_sandbox:
            accounts = self._start_sandbox()
        self.env = {
            "GENQ_VAR_DIR": str(self.var_dir),
            "GENQ_REDIS_URL": redis_url,
            "GENQ_DATABASE_URL": self.settings.resolved_database_url(),
            "GENQ_STORAGE_URL": self.settings.resolved_storage_url(),
            "GENQ_ACCOUNTS": str(Path(accounts).resolve()),
        }
        if self.use_sandbox and self.settings.first_poll_delay is None:
            self.env["GENQ_FIRST_POLL_DELAY"] = f"{sandbox_first_poll(sandbox_config()):g}"
        return self.settings.model_copy(
            update={
                "redis_url": redis_url,
                "database_url": self.env["GENQ_DATABASE_URL"],
                "storage_url": self.env["GENQ_STORAGE_URL"],
                "accounts": Path(self.env["GENQ_ACCOUNTS"]),
            }
        )

    def start_worker(self, *, only_batch: int | None = None) -> None:
        """One worker with beat for every queue; with ``only_batch``, its dispatcher sends that batch's
        jobs and no other's (``genq run`` works on its own batch)."""
        logs = self.var_dir / "logs"
        logs.mkdir(exist_ok=True)
        command = [
            sys.executable, "-m", "celery", "-A", "workers", "worker",
            "--beat", "--schedule", str(self.var_dir / "celerybeat-schedule"),
            "--queues", "control,submit,poll,collect",
            "--pool", "threads", "--concurrency", str(self.concurrency),
            "--hostname", f"genq-run-{os.getpid()}@%h",
            "--loglevel", "INFO",
        ]  # fmt: skip
        env = {**os.environ, **self.env}
        if only_batch is not None:
            env["GENQ_ONLY_BATCH"] = str(only_batch)
        log = open(logs / "worker.log", "ab")  # noqa: SIM115  (owned by the child)
        self.worker = subprocess.Popen(
            lifeline_command(command),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def worker_alive(self) -> bool:
        return self.worker is not None and self.worker.poll() is None

    def stop(self) -> None:
        if self.worker is not None:
            if self.worker.poll() is None:
                self.worker.send_signal(signal.SIGTERM)
                try:
                    self.worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(self.worker.pid, signal.SIGKILL)
                    self.worker.wait()
            self.worker = None
        if self.sandbox_server is not None:
            self.sandbox_server.stop()  # type: ignore[attr-defined]
            self.sandbox_server = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def _start_sandbox(self) -> Path:
        from sandbox.server import SandboxServer

        server = SandboxServer(sandbox_config(), state_file=self.var_dir / "sandbox-world.pickle")
        server.start()
        self.sandbox_server = server
        os.environ[SANDBOX_KEY_ENV] = os.environ.get(SANDBOX_KEY_ENV) or SANDBOX_LOCAL_KEY
        path = self.var_dir / "sandbox-accounts.yaml"
        entries = sandbox_accounts(server.config, server.url, self.providers)
        path.write_text(yaml.safe_dump({"accounts": entries}, sort_keys=False))
        return path

    def __enter__(self) -> EmbeddedStack:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
