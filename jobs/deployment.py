"""The embedded deployment: genq on one machine, started in the background and found by every command.

``genq up`` starts one supervisor process (``python -m jobs.deployment``) in a session of its own.
The supervisor starts what the machine lacks through ``EmbeddedStack`` (the private Redis unless
``GENQ_REDIS_URL`` names one, the sandbox when asked) and one worker with beat; once all of them
answer it writes ``var/deployment.json``. It starts a worker again if one dies, and on SIGTERM, SIGINT
or SIGHUP it stops them in order (the worker, the sandbox saving its state, Redis) and removes the
record. Its children die with it should it be killed outright (``jobs.lifeline``).

``genq down`` signals the supervisor and waits for it; ``submit``, ``watch``, ``status``, ``worker``
and ``flower`` read the record to find the broker and, with the sandbox, its accounts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

import redis

from jobs.embedded import SANDBOX_KEY_ENV, SANDBOX_LOCAL_KEY, EmbeddedStack
from jobs.errors import ConfigError, RedisUnavailable
from jobs.rediscalls import talking_to_redis
from jobs.redisserver import client_url
from jobs.settings import Settings

RECORD_NAME = "deployment.json"
LOG_NAME = "deployment.log"
SUPERVISOR_MODULE = "jobs.deployment"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached a foreground command: it stops as Ctrl-C stops it, children first."""


@dataclass(frozen=True)
class Deployment:
    """What ``genq up`` started, as its record in ``var/`` says."""

    pid: int
    """The supervisor's process id."""
    sandbox: bool
    env: dict[str, str] = field(default_factory=dict)
    """The settings every process of the deployment uses (``GENQ_REDIS_URL``, ``GENQ_ACCOUNTS``...)."""
    worker: int | None = None
    log: str = ""

    def alive(self) -> bool:
        return _is_supervisor(self.pid)

    def describe(self) -> str:
        parts = [f"supervisor pid {self.pid}", f"broker {self.env.get('GENQ_REDIS_URL', '?')}"]
        if self.sandbox:
            parts.append("the sandbox")
        return ", ".join(parts)


def record_path(settings: Settings) -> Path:
    return settings.var_dir.resolve() / RECORD_NAME


def running(settings: Settings) -> Deployment | None:
    """The deployment ``genq up`` started in this ``var/``, if it is still running; a stale record
    (its supervisor gone) is removed."""
    path = record_path(settings)
    try:
        deployment = Deployment(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if not deployment.alive():
        path.unlink(missing_ok=True)
        return None
    return deployment


def settings_with(deployment: Deployment | None) -> Settings:
    """Settings as the deployment's processes see them; what the person set in the environment wins."""
    if deployment is not None:
        for name, value in deployment.env.items():
            os.environ.setdefault(name, value)
        if deployment.sandbox:
            os.environ.setdefault(SANDBOX_KEY_ENV, SANDBOX_LOCAL_KEY)
    return Settings()


def broker_answers(settings: Settings) -> bool:
    client = redis.Redis.from_url(client_url(settings.resolved_redis_url()), socket_timeout=2, socket_connect_timeout=2)
    try:
        with talking_to_redis("asking whether the broker answers"):
            return bool(client.ping())
    except RedisUnavailable:
        return False
    finally:
        client.close()


def require_broker(settings: Settings) -> None:
    """Raise a one-line ``ConfigError`` naming ``genq up`` when no broker answers."""
    if broker_answers(settings):
        return
    if settings.redis_url:
        raise ConfigError(f"the broker at GENQ_REDIS_URL does not answer ({_redacted(settings.redis_url)})")
    raise ConfigError(
        f"genq is not running in {settings.var_dir.resolve()}: start it with `genq up` (or `genq up --sandbox`)"
    )


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def up(settings: Settings, *, sandbox: bool, concurrency: int, timeout: float = 60.0) -> Deployment:
    """Start the supervisor in the background and wait until its deployment answers."""
    var_dir = settings.var_dir.resolve()
    logs = var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / LOG_NAME
    command = [sys.executable, "-m", SUPERVISOR_MODULE, "--concurrency", str(concurrency)]
    if sandbox:
        command.append("--sandbox")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not the terminal's: closing it or Ctrl-C there leaves it running
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = running(settings)
        if found is not None and found.pid == process.pid:
            return found
        if process.poll() is not None:
            raise ConfigError(f"genq up failed; the last lines of {log_path}:\n{_tail(log_path)}")
        time.sleep(0.1)
    process.terminate()
    raise ConfigError(f"genq up did not answer within {timeout:.0f} s; see {log_path}")


def down(deployment: Deployment, *, timeout: float = 60.0) -> None:
    """Stop the supervisor and so everything it started; returns once it is gone."""
    try:
        os.kill(deployment.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _exists(deployment.pid):
            return
        time.sleep(0.1)
    os.killpg(deployment.pid, signal.SIGKILL)  # its children go with it (jobs.lifeline)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited: only its entry is left for its parent to read
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _is_supervisor(pid: int) -> bool:
    """True when ``pid`` is alive and is a supervisor (not a process that took a dead one's id)."""
    if not _exists(pid):
        return False
    try:
        return SUPERVISOR_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP stop a foreground command the way Ctrl-C does (``Stopped``); once one has
    come, the ones after it are ignored, so stopping the children is not cut short."""
    caught = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal caught
        if caught:
            return
        caught = True
        raise Stopped(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def supervise(settings: Settings, *, sandbox: bool, concurrency: int, restart_after: float = 5.0) -> None:
    """The supervisor's life: start the stack, write the record, keep a worker running, stop on a signal."""
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, request_stop)
    path = record_path(settings)
    stack = EmbeddedStack(settings, sandbox=sandbox, concurrency=concurrency)
    try:
        stack.start_services()
        stack.start_worker()
        _write_record(path, stack, sandbox)
        print(f"genq is up: {stack.env['GENQ_REDIS_URL']}", flush=True)
        _keep_worker(stack, stop, restart_after, on_restart=lambda: _write_record(path, stack, sandbox))
    finally:
        path.unlink(missing_ok=True)
        stack.stop()
        print("genq is down", flush=True)


def _keep_worker(
    stack: EmbeddedStack, stop: threading.Event, restart_after: float, on_restart: Callable[[], None]
) -> None:
    while not stop.wait(1.0):
        if stack.worker_alive():
            continue
        code = stack.worker.poll() if stack.worker is not None else None
        print(f"the worker exited ({code}); starting another in {restart_after:.0f} s", flush=True)
        if stop.wait(restart_after):
            return
        stack.start_worker()
        on_restart()


def _write_record(path: Path, stack: EmbeddedStack, sandbox: bool) -> None:
    deployment = Deployment(
        pid=os.getpid(),
        sandbox=sandbox,
        env=dict(stack.env),
        worker=stack.worker.pid if stack.worker is not None else None,
        log=str(path.parent / "logs" / LOG_NAME),
    )
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(deployment), indent=2))
    partial.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.deployment", description="The supervisor of `genq up`.")
    parser.add_argument("--sandbox", action="store_true")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    supervise(Settings(), sandbox=args.sandbox, concurrency=args.concurrency)


if __name__ == "__main__":
    main()
