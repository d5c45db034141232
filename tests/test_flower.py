"""Flower, started as a deployment starts it, sees a run's tasks by their genq names."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from jobs.batchfile import load_batch
from jobs.db import make_engine
from jobs.producer import produce
from tests.conftest import ROOT, settings_from
from tests.test_cli import GENQ, genq
from tests.test_pipeline import wait_final
from workers.app import make_app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_flower_lists_the_runs_tasks_named_genq(tmp_path: Path, genq_env: dict[str, str], start_worker):
    port = free_port()
    log = tmp_path / "flower.log"
    with open(log, "wb") as handle:
        flower = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "flower", f"--port={port}", "--address=127.0.0.1"],
            env={**os.environ, **genq_env, "FLOWER_UNAUTHENTICATED_API": "true"},
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        api = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/tasks", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"flower did not answer:\n{log.read_text()[-3000:]}")

        start_worker()
        source = tmp_path / "two.csv"
        source.write_text("prompt,provider\na fox,gencraft\na hare,gencraft\n")
        settings = settings_from(genq_env)
        engine = make_engine(settings.resolved_database_url())
        batch = produce(engine, load_batch(source)).batch
        make_app(settings).send_task("genq.dispatch")
        assert wait_final(engine, batch.id).state == "succeeded"

        names: set[str] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not {"genq.submit", "genq.poll"} <= names:
            tasks = httpx.get(f"{api}/tasks", timeout=5).json()
            names = {task["name"] for task in tasks.values() if task.get("name")}
            time.sleep(0.3)
        assert {"genq.dispatch", "genq.submit", "genq.poll"} <= names, names
        assert all(name.startswith("genq.") for name in names)
    finally:
        flower.terminate()
        flower.wait(timeout=20)


def test_genq_flower_refuses_to_serve_without_a_password(tmp_path: Path, redis_url: str):
    env = {"GENQ_REDIS_URL": redis_url, "COLUMNS": "200"}

    bare = genq("flower", cwd=tmp_path, env=env, timeout=30)
    exposed = genq("flower", "--unauthenticated", "--address", "0.0.0.0", cwd=tmp_path, env=env, timeout=30)

    assert bare.returncode == 2 and "--basic-auth" in bare.stderr
    assert exposed.returncode == 2 and "loopback" in exposed.stderr


def test_genq_flower_with_a_password_shows_nothing_without_it(tmp_path: Path, redis_url: str):
    port = free_port()
    log = tmp_path / "flower.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GENQ_REDIS_URL": redis_url}
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    with open(log, "wb") as handle:
        flower = subprocess.Popen([*GENQ, "flower", "--port", str(port), "--basic-auth", "night:owl"], cwd=tmp_path,
                                  env=env, stdout=handle, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(base, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"flower did not answer:\n{log.read_text()[-3000:]}")

        for path in ("/", "/workers", "/tasks", "/api/tasks"):
            assert httpx.get(base + path, timeout=10).status_code == 401, path
            assert httpx.get(base + path, auth=("night", "owl"), timeout=10).status_code == 200, path
            assert httpx.get(base + path, auth=("night", "lark"), timeout=10).status_code == 401, path
        assert "night:owl" not in Path(f"/proc/{flower.pid}/cmdline").read_bytes().decode(errors="replace")
    finally:
        flower.terminate()
        flower.wait(timeout=20)
