"""A worker holding late-acked messages survives its Redis being killed and started again, once empty and
once with its data, and runs a task sent after each restart.

Without ``workers.brokerfix`` (kombu 5.7.0) the worker exits at the first restart with
``Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from jobs.redisserver import EmbeddedRedis, client_url
from tests.broker_restart_app import make_test_app

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 4
HELD = 2
"""Messages held per round: fewer than the slots, so the worker also has a BRPOP in flight."""
WAIT = 30.0
"""Seconds; the bound of every wait, never a measured threshold."""
KEPT = "genq-test:kept"
UNRECOVERABLE = "Unrecoverable error"
ROUNDS = (False, True)
"""Whether Redis keeps its data across each restart: empty once, then with its data."""


class Worker:
    def __init__(self, pool: str, redis_url: str, marks: Path, log: Path) -> None:
        command = [
            sys.executable, "-m", "celery", "-A", "tests.broker_restart_app", "worker",
            "--pool", pool, "--concurrency", str(CONCURRENCY), "--queues", "control",
            "--hostname", f"broker-restart-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO",
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        self.log = log
        env = {**os.environ, "GENQ_REDIS_URL": redis_url, "GENQ_TEST_MARKS": str(marks)}
        with open(log, "wb") as handle:
            self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited (rc {self.process.returncode}) waiting for {what}:\n{self.tail()}")
            if UNRECOVERABLE in self.text():  # the worker is shutting down, held tasks may keep it a while
                raise AssertionError(f"worker failed waiting for {what}:\n{self.tail()}")
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {WAIT:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.text()[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis") as started:
        yield started


def restart(server: EmbeddedRedis, keep_data: bool) -> None:
    """kill -9 the redis-server and start it again on the same socket, empty or with its data."""
    client = redis.Redis.from_url(client_url(server.url))
    dump = server.var_dir / "dump.rdb"
    if keep_data:
        client.set(KEPT, "1")
        client.save()  # the unacked hash, the bindings and KEPT; read back at start
    else:
        dump.unlink(missing_ok=True)
    client.close()
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    server.process = None
    server.start()
    kept = redis.Redis.from_url(client_url(server.url)).get(KEPT)
    assert kept == (b"1" if keep_data else None)


def send(app: Celery, name: str, *args: str) -> None:
    with app.connection_for_write() as connection:  # a fresh connection declares the queue again
        app.send_task(name, args=args, connection=connection)


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_busy_worker_survives_redis_restarts(tmp_path: Path, server: EmbeddedRedis, pool: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    app = make_test_app(server.url)
    worker = Worker(pool, server.url, marks, tmp_path / "worker.log")
    try:
        worker.wait_for("ready", lambda: " ready." in worker.text())
        for round_, keep_data in enumerate(ROUNDS):
            tags = [f"{round_}-{k}" for k in range(HELD)]
            for tag in tags:
                send(app, "brokerrestart.hold", tag, f"release-{round_}")
            worker.wait_for("held tasks", lambda: all((marks / f"started-{t}").exists() for t in tags))  # noqa: B023

            connected = worker.text().count("Connected to")
            restart(server, keep_data)
            worker.wait_for("reconnect", lambda: worker.text().count("Connected to") > connected)  # noqa: B023
            (marks / f"release-{round_}").touch()

            send(app, "brokerrestart.probe", str(round_))
            worker.wait_for(f"the task sent after restart {round_}", (marks / f"probe-{round_}").exists)
            assert worker.process.poll() is None
        assert UNRECOVERABLE not in worker.text()
    finally:
        for round_ in range(len(ROUNDS)):
            (marks / f"release-{round_}").touch()  # so that a warm shutdown need not wait for held tasks
        worker.stop()
