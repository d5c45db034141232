"""The ``genq`` command as a person runs it: exit codes, messages naming file, line and field, and
a refused file leaving no row behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from jobs.db import make_engine, migrate
from jobs.models import Batch, Job, ProviderTask
from tests.conftest import ROOT

GENQ = [sys.executable, "-m", "jobs.cli"]


def genq(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GENQ, *args], cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def rows(database: Path) -> tuple[int, int]:
    engine = make_engine(f"sqlite:///{database}")
    migrate(engine)
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Batch)).one(), session.exec(
            select(func.count()).select_from(Job)
        ).one()


BAD_FILES = {
    "broken.yaml": ("jobs:\n  - prompt: a cat\n    provider: gencraft\n  - prompt: [unclosed\n", "broken.yaml:4"),
    "catalog.csv": (
        "prompt,provider\n" + "".join(f"item {i},gencraft\n" for i in range(2, 7)) + ",gencraft\n",
        "catalog.csv:7: prompt",
    ),
    "mixed.jsonl": (
        '{"prompt": "a", "provider": "gencraft"}\n{"prompt": "b", "provider": "dalle"}\n',
        "mixed.jsonl:2: provider",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_exits_2_naming_file_line_and_field_and_writes_nothing(tmp_path: Path, name: str):
    content, expected = BAD_FILES[name]
    (tmp_path / name).write_text(content)

    result = genq("run", name, "--sandbox", cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert rows(tmp_path / "var" / "genq.db") == (0, 0)


def test_run_with_the_sandbox_stores_every_picture_and_status_reports_it(tmp_path: Path):
    (tmp_path / "shop.csv").write_text(
        "prompt,provider,name,aspect\na mug,gencraft,mug/front,4:3\na cap,gencraft,cap/front,9:16\n"
    )
    result = genq("run", "shop.csv", "--sandbox", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Images:" in result.stdout

    status = genq("status", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    [batch] = json.loads(status.stdout)["batches"]
    assert batch["state"] == "succeeded"
    assert batch["counts"]["succeeded"] == 2 and batch["images"] == 2
    pictures = sorted(p.relative_to(tmp_path / "var" / "objects").as_posix()
                      for p in (tmp_path / "var" / "objects").rglob("*.png"))  # fmt: skip
    assert pictures == [f"shop-{batch['id']}/cap/front.png", f"shop-{batch['id']}/mug/front.png"]

    again = genq("run", "shop.csv", "--sandbox", cwd=tmp_path)
    assert again.returncode == 0
    assert "resuming batch" in again.stdout
    assert rows(tmp_path / "var" / "genq.db") == (1, 2)


def test_ctrl_c_stops_everything_and_the_same_command_resumes_without_sending_a_job_twice(tmp_path: Path):
    (tmp_path / "slow.csv").write_text("prompt,provider\n" + "".join(f"picture {n},gencraft\n" for n in range(6)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GENQ_SANDBOX_LATENCY": "4"}
    run = subprocess.Popen([*GENQ, "run", "slow.csv", "--sandbox"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'genq.db'}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and running_jobs(engine) < 6:
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert not (tmp_path / "var" / "redis.sock").exists()

    again = genq("run", "slow.csv", "--sandbox", cwd=tmp_path, env={"GENQ_SANDBOX_LATENCY": "4"})

    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming batch" in again.stdout
    with Session(engine) as session:
        submits = session.exec(select(ProviderTask.job_id)).all()
    assert sorted(submits) == [1, 2, 3, 4, 5, 6]  # one provider task each: nothing was sent twice


def running_jobs(engine) -> int:
    try:
        with Session(engine) as session:
            return len(session.exec(select(Job.id).where(col(Job.state) == "running")).all())
    except OperationalError:
        return 0  # the database is not made yet


EXAMPLES = ROOT / "batches" / "examples"
PROVIDERS = ("gencraft", "girlgenerator", "talecraft", "qtpixel", "cloudsway")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_example_runs_to_every_picture_against_the_sandbox(tmp_path: Path, provider: str):
    from jobs.batchfile import load_batch
    from workers.providers import ADAPTERS

    example = EXAMPLES / f"{provider}.yaml"
    pictures = sum(ADAPTERS[provider].cost(job).pictures for job in load_batch(example).jobs)

    result = genq("run", str(example), "--sandbox", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    objects = tmp_path / "var" / "objects"
    stored = [path for path in objects.rglob("*") if path.suffix in (".png", ".jpg")
              and not {"sheets", "thumbs"} & set(path.relative_to(objects).parts)]  # fmt: skip
    assert len(stored) == pictures


CANNOT_DO = {
    "fusion.yaml": ("jobs:\n  - prompt: merge\n    provider: gencraft\n    mode: fusion\n", "fusion.yaml:2: mode"),
    "long.csv": ("prompt,provider\n" + "a" * 2001 + ",girlgenerator\n", "long.csv:2: prompt"),
    "nine.jsonl": ('{"prompt": "fruit", "provider": "cloudsway", "count": 9}\n', "nine.jsonl:1: count"),
    "anime.yaml": ("jobs:\n  - {prompt: a fox, provider: talecraft, style: anime}\n", "anime.yaml:2: style"),
}


@pytest.mark.parametrize("name", sorted(CANNOT_DO))
def test_a_row_the_provider_cannot_do_exits_2_with_the_reason_and_writes_nothing(tmp_path: Path, name: str):
    content, expected = CANNOT_DO[name]
    (tmp_path / name).write_text(content)

    result = genq("run", name, "--sandbox", cwd=tmp_path, env={"COLUMNS": "200"})

    assert result.returncode == 2, result.stdout + result.stderr
    [line] = [line.strip() for line in result.stderr.splitlines() if expected in line]
    assert len(line) > len(expected) + 20  # the reason follows the field
    assert rows(tmp_path / "var" / "genq.db") == (0, 0)


def test_plan_for_the_sandbox_needs_no_accounts_file_and_takes_its_latency(tmp_path: Path):
    without = genq("plan", str(EXAMPLES / "qtpixel.yaml"), cwd=tmp_path, env={"COLUMNS": "200"})
    quick = genq("plan", str(EXAMPLES / "catalog.csv"), "--sandbox", "--json", cwd=tmp_path)
    slow = genq("plan", str(EXAMPLES / "catalog.csv"), "--sandbox", "--json", cwd=tmp_path,
                env={"GENQ_SANDBOX_LATENCY": "20"})  # fmt: skip

    assert without.returncode == 2 and "--sandbox" in without.stderr
    assert quick.returncode == 0 and slow.returncode == 0, quick.stderr + slow.stderr
    assert json.loads(quick.stdout)["seconds"] < 5
    assert 20 <= json.loads(slow.stdout)["seconds"] < 30  # one wave of 20 s: 5 jobs, 32 places
