"""A long batch file through the real ``genq submit``: every row written, a problem at the far end
refusing the whole file with nothing written, and memory that does not grow with the file.

The file is checked in one reading and written in a second, so no row is held; these tests put
the telling row last, where a reader that held the file, or wrote before it had finished checking,
would show it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from jobs.db import make_engine, migrate
from jobs.models import Batch, Job
from jobs.spec import PROVIDERS
from tests.conftest import ROOT, SANDBOX_KEY, write_accounts

ROWS = 50_000
OLD_BYTES_PER_ROW = 2_700
"""What ``genq submit`` held a row before it streamed the file (271 MB for 100,000 rows)."""


@dataclass(frozen=True)
class Submitted:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_bytes: int


def catalog(path: Path, rows: int, *, last: str | None = None) -> Path:
    """``rows`` jobs over every provider, each named; ``last``, when given, is the last row instead."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("prompt,provider,name,count\n")
        for number in range(1, rows):
            out.write(f"a lighthouse in fog (study {number}),{PROVIDERS[number % len(PROVIDERS)]},item-{number:06d},\n")
        out.write(last if last is not None else f"a lighthouse at noon,gencraft,item-{rows:06d},\n")
    return path


def submit(file: Path, env: dict[str, str]) -> Submitted:
    """The real ``genq submit`` in a process of its own, and its own peak resident memory (``wait4``)."""
    with open(file.with_suffix(".out"), "w+") as stdout, open(file.with_suffix(".err"), "w+") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "submit", str(file)],
            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "1000", **env},
            stdout=stdout,
            stderr=stderr,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        return Submitted(child.returncode, stdout.read(), stderr.read(), usage.ru_maxrss * 1024)


def environment(tmp_path: Path, redis_url: str, database_url: str) -> dict[str, str]:
    accounts = {provider: f"http://127.0.0.1:9/{provider}" for provider in PROVIDERS}  # nothing is sent
    return {
        "GENQ_VAR_DIR": str(tmp_path / "var"),
        "GENQ_DATABASE_URL": database_url,
        "GENQ_REDIS_URL": redis_url,
        "GENQ_ACCOUNTS": str(write_accounts(tmp_path / "accounts.yaml", accounts)),
        "GENQ_TEST_SANDBOX_KEY": SANDBOX_KEY,
    }


def counts(database_url: str) -> tuple[int, int]:
    engine = make_engine(database_url)
    migrate(engine)
    try:
        with Session(engine) as session:
            batches = session.exec(select(func.count()).select_from(Batch)).one()
            return batches, session.exec(select(func.count()).select_from(Job)).one()
    finally:
        engine.dispose()


def test_a_long_csv_through_the_cli_leaves_every_row_in_file_order(tmp_path: Path, clean_redis: str, database_url: str):
    file = catalog(tmp_path / "catalog.csv", ROWS)

    result = submit(file, environment(tmp_path, clean_redis, database_url))

    assert result.returncode == 0, result.stderr
    assert counts(database_url) == (1, ROWS)
    engine = make_engine(database_url)
    with Session(engine) as session:
        batch = session.exec(select(Batch)).one()
        assert (batch.id, batch.job_count) == (int(result.stdout), ROWS)
        first, last = (
            session.exec(select(Job).order_by(order)).first() for order in (col(Job.seq), col(Job.seq).desc())
        )
        assert first is not None and last is not None
        assert (first.seq, first.line, first.name, first.provider) == (1, 2, "item-000001", PROVIDERS[1])
        assert (last.seq, last.line, last.name, last.spec) == (ROWS, ROWS + 1, f"item-{ROWS:06d}",
                                                              {"prompt": "a lighthouse at noon", "provider": "gencraft",
                                                               "name": f"item-{ROWS:06d}"})  # fmt: skip
    engine.dispose()

    again = submit(file, environment(tmp_path, clean_redis, database_url))
    assert again.returncode == 0 and again.stdout.strip() == result.stdout.strip(), again.stderr
    assert "already batch" in again.stderr
    assert counts(database_url) == (1, ROWS)  # the same bytes are the same batch


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        ("a twin,gencraft,item-000002,", f":{ROWS + 1}: name: 'item-000002' is already the name of line 3"),
        ("a cat,dalle,item-last,", f":{ROWS + 1}: provider: unknown provider 'dalle'"),
        ("a cat,talecraft,item-last,3", f":{ROWS + 1}: count: talecraft: one call makes one picture"),
    ],
    ids=["duplicate-name", "unknown-provider", "beyond-the-offer"],
)
def test_a_problem_on_the_last_line_refuses_the_whole_file_and_writes_nothing(
    tmp_path: Path, clean_redis: str, database_url: str, last: str, expected: str
):
    file = catalog(tmp_path / "catalog.csv", ROWS, last=last)

    result = submit(file, environment(tmp_path, clean_redis, database_url))

    assert result.returncode == 2, result.stdout
    assert "refused: 1 problem(s); nothing was submitted" in result.stderr
    [problem] = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert problem.startswith(f"{file}{expected}"), problem
    assert counts(database_url) == (0, 0)


def test_memory_does_not_grow_with_the_file(tmp_path: Path, clean_redis: str):
    """Peak memory of submitting N and 4N rows, side by side: the growth a row is a small fraction of
    what holding the rows cost."""
    small, large = 25_000, 100_000
    peaks = []
    for rows in (small, large):
        folder = tmp_path / str(rows)
        folder.mkdir()
        database_url = f"sqlite:///{folder / 'genq.db'}"
        result = submit(catalog(folder / "catalog.csv", rows), environment(folder, clean_redis, database_url))
        assert result.returncode == 0, result.stderr
        assert counts(database_url) == (1, rows)
        peaks.append(result.peak_rss_bytes)

    per_row = (peaks[1] - peaks[0]) / (large - small)
    assert per_row < OLD_BYTES_PER_ROW / 10, f"{per_row:.0f} bytes a row; peaks {peaks}"
