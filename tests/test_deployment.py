"""genq on one machine as a person runs it: `genq up` starts it in the background and `genq down`
stops exactly that; a `genq run` stopped by any signal leaves no process behind and resumes without
paying twice; the worker a run starts sends only its own batch."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from jobs.batchfile import load_batch
from jobs.db import make_engine, migrate
from jobs.models import Job
from jobs.producer import produce
from tests.conftest import ROOT
from tests.test_cli import GENQ, genq, running_jobs

EXAMPLES = ROOT / "batches" / "examples"


def processes_of(folder: Path) -> list[str]:
    """Every live process whose command line names ``folder`` (its Redis socket, its beat schedule,
    its worker's hostname file): what a run in that folder started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if str(folder) in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


def wait_for_no_processes(folder: Path, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_of(folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def sandbox_prompts(var: Path) -> Counter[str]:
    """How often the sandbox (a provider's memory, saved when it stopped) was sent each prompt."""
    with (var / "sandbox-world.pickle").open("rb") as handle:
        world = pickle.load(handle)["world"]
    return Counter(submission.prompt for submission in world["submissions"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_run_stopped_by_a_signal_leaves_no_process_and_resumes_without_paying_twice(tmp_path: Path, signum: int):
    jobs = 12
    (tmp_path / "slow.csv").write_text("prompt,provider\n" + "".join(f"picture {n},gencraft\n" for n in range(jobs)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GENQ_SANDBOX_LATENCY": "4"}
    run = subprocess.Popen([*GENQ, "run", "slow.csv", "--sandbox", "--concurrency", "4"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'genq.db'}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and running_jobs(engine) < 4:
        time.sleep(0.2)
    assert running_jobs(engine) >= 4, "no job got going"

    run.send_signal(signum)
    _, stderr = run.communicate(timeout=60)

    assert run.returncode == 128 + signum, stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr
    assert wait_for_no_processes(tmp_path) == []
    assert sum(sandbox_prompts(tmp_path / "var").values()) >= 4  # the sandbox saved what it was sent

    again = genq("run", "slow.csv", "--sandbox", cwd=tmp_path, env={"GENQ_SANDBOX_LATENCY": "1"})

    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming batch" in again.stdout
    with Session(engine) as session:
        states = session.exec(select(Job.state)).all()
    assert states == ["succeeded"] * jobs
    assert sandbox_prompts(tmp_path / "var") == Counter({f"picture {n}": 1 for n in range(jobs)})
    assert wait_for_no_processes(tmp_path) == []


def test_a_run_killed_outright_takes_its_worker_and_redis_with_it(tmp_path: Path):
    (tmp_path / "slow.csv").write_text("prompt,provider\n" + "".join(f"picture {n},gencraft\n" for n in range(4)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GENQ_SANDBOX_LATENCY": "4"}
    run = subprocess.Popen([*GENQ, "run", "slow.csv", "--sandbox"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'genq.db'}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and running_jobs(engine) < 1:
        time.sleep(0.2)
    assert len(processes_of(tmp_path)) >= 2  # the worker and redis-server name the folder

    run.kill()
    run.wait()

    assert wait_for_no_processes(tmp_path, timeout=40) == []


def test_commands_that_need_a_broker_say_so_in_one_line_when_genq_is_not_up(tmp_path: Path):
    for command in (["submit", str(EXAMPLES / "qtpixel.yaml")], ["worker"], ["watch"]):
        result = genq(*command, cwd=tmp_path, env={"COLUMNS": "200"}, timeout=30)

        assert result.returncode == 2, (command, result.stdout, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert "genq up" in line
    assert not (tmp_path / "var" / "genq.db").exists() or _batches(tmp_path) == []


def _batches(folder: Path) -> list[int]:
    engine = make_engine(f"sqlite:///{folder / 'var' / 'genq.db'}")
    migrate(engine)
    with Session(engine) as session:
        return list(session.exec(select(Job.batch_id).distinct()).all())


def test_up_submit_status_down(tmp_path: Path):
    up = genq("up", "--sandbox", cwd=tmp_path, timeout=90)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        again = genq("up", "--sandbox", cwd=tmp_path, timeout=30)
        assert again.returncode == 0 and "already up" in again.stdout

        submitted = genq("submit", str(EXAMPLES / "qtpixel.yaml"), cwd=tmp_path, timeout=30)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        batch_id = int(submitted.stdout.strip())

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = genq("status", str(batch_id), "--json", cwd=tmp_path, timeout=30)
            assert status.returncode == 0, status.stderr
            if json.loads(status.stdout)["state"] != "running":
                break
            time.sleep(0.5)
        assert json.loads(status.stdout)["state"] == "succeeded"
    finally:
        down = genq("down", cwd=tmp_path, timeout=90)
    assert down.returncode == 0, down.stdout + down.stderr
    assert wait_for_no_processes(tmp_path) == []
    assert not (tmp_path / "var" / "deployment.json").exists()
    assert "not running" in genq("down", cwd=tmp_path, timeout=30).stdout


def test_the_worker_a_run_starts_sends_only_its_own_batch(tmp_path: Path):
    """A batch left pending in the same folder (submitted to a deployment since stopped) stays pending:
    `genq run` ends when its own batch does, so it must not start paid work it would then abandon."""
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'genq.db'}")
    migrate(engine)
    (tmp_path / "other.csv").write_text("prompt,provider\nsomeone else's fox,gencraft\nsomeone else's hare,gencraft\n")
    other = produce(engine, load_batch(tmp_path / "other.csv")).batch
    (tmp_path / "mine.csv").write_text("prompt,provider\nmy owl,gencraft\nmy lark,gencraft\n")

    result = genq("run", "mine.csv", "--sandbox", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    with Session(engine) as session:
        left = session.exec(select(Job.state).where(col(Job.batch_id) == other.id)).all()
    assert left == ["pending", "pending"]
    assert set(sandbox_prompts(tmp_path / "var")) == {"my owl", "my lark"}


def test_a_run_uses_the_deployment_when_genq_is_up(tmp_path: Path):
    (tmp_path / "mine.csv").write_text("prompt,provider\nmy owl,gencraft\n")
    assert genq("up", "--sandbox", cwd=tmp_path, timeout=90).returncode == 0
    try:
        result = genq("run", "mine.csv", "--sandbox", cwd=tmp_path)
    finally:
        assert genq("down", cwd=tmp_path, timeout=90).returncode == 0

    assert result.returncode == 0, result.stdout + result.stderr
    assert "using the deployment of `genq up`" in result.stdout
    assert wait_for_no_processes(tmp_path) == []
