"""After a run with failures: the results say what became of every row, `errors.csv` is a batch file
of the failed rows, `genq retry BATCH --failed` sends exactly those again in the same batch, and
`genq export` hands the batch on as a folder or a zip."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

from sqlmodel import Session, select

from jobs.batchfile import load_batch
from jobs.db import make_engine
from jobs.models import Asset
from tests.test_cli import genq
from tests.test_deployment import sandbox_prompts

FAILING = {"GENQ_SANDBOX_FAILURE_RATE": "0.5", "GENQ_SANDBOX_SEED": "3"}


def lamps(folder: Path, count: int = 12) -> Path:
    path = folder / "lamps.csv"
    path.write_text("prompt,provider,name,aspect\n" + "".join(f"a lamp number {n},gencraft,lamp-{n},4:3\n"
                                                             for n in range(1, count + 1)))  # fmt: skip
    return path


def results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_retry_sends_exactly_the_failed_rows_again_and_the_batch_ends_succeeded(tmp_path: Path):
    lamps(tmp_path)
    first = genq("run", "lamps.csv", "--sandbox", cwd=tmp_path, env=FAILING)
    assert first.returncode == 1, first.stdout + first.stderr  # some rows failed
    folder = tmp_path / "var" / "objects" / "lamps-1"
    failed = {row["name"] for row in results(folder) if row["state"] == "failed"}
    assert 0 < len(failed) < 12
    assert all(row["reason"] for row in results(folder) if row["state"] == "failed")
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'genq.db'}")
    with Session(engine) as session:
        kept = {(a.job_id, a.key, a.sha256) for a in session.exec(select(Asset)).all()}

    dry = genq("retry", "1", "--dry-run", "--sandbox", cwd=tmp_path)
    assert dry.returncode == 0 and f"{len(failed)} rows would be sent again" in dry.stdout
    assert sandbox_prompts(tmp_path / "var") == Counter({f"a lamp number {n}": 1 for n in range(1, 13)})

    again = genq("retry", "1", "--failed", "--sandbox", cwd=tmp_path)

    assert again.returncode == 0, again.stdout + again.stderr
    sent = sandbox_prompts(tmp_path / "var")
    resent = {prompt for prompt, times in sent.items() if times == 2}
    assert resent == {f"a lamp number {name.removeprefix('lamp-')}" for name in failed}
    assert set(sent.values()) == {1, 2}
    rows = results(folder)
    assert [row["state"] for row in rows] == ["succeeded"] * 12
    assert [row["name"] for row in rows] == [f"lamp-{n}" for n in range(1, 13)]  # the same names, same batch
    with Session(engine) as session:
        now = {(a.job_id, a.key, a.sha256) for a in session.exec(select(Asset)).all()}
    assert kept <= now  # the rows that had succeeded kept their pictures untouched
    assert len(now) == 12
    assert (folder / "errors.csv").read_text().splitlines() == ["prompt,provider,name"]


def test_errors_csv_is_a_batch_file_of_the_failed_rows(tmp_path: Path):
    lamps(tmp_path)
    assert genq("run", "lamps.csv", "--sandbox", cwd=tmp_path, env=FAILING).returncode == 1
    folder = tmp_path / "var" / "objects" / "lamps-1"
    failed = [row for row in results(folder) if row["state"] != "succeeded"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(folder / "errors.csv", elsewhere / "errors.csv")

    spec = load_batch(elsewhere / "errors.csv")
    assert [(job.prompt, job.name, job.aspect) for job in spec.jobs] == [
        (row["fields"]["prompt"], row["name"], "4:3") for row in failed
    ]
    rerun = genq("run", "errors.csv", "--sandbox", cwd=elsewhere)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"submitted batch 1 (errors): {len(failed)} jobs" in rerun.stdout


def test_results_carry_each_rows_fields_tasks_credits_and_pictures(tmp_path: Path):
    lamps(tmp_path, count=3)
    assert genq("run", "lamps.csv", "--sandbox", cwd=tmp_path).returncode == 0
    folder = tmp_path / "var" / "objects" / "lamps-1"

    rows = results(folder)
    assert [(row["line"], row["name"], row["fields"]["aspect"]) for row in rows] == [
        (2, "lamp-1", "4:3"), (3, "lamp-2", "4:3"), (4, "lamp-3", "4:3")
    ]  # fmt: skip
    for row in rows:
        assert row["state"] == "succeeded" and row["credits"] == 1 and len(row["task_ids"]) == 1
        [picture] = row["pictures"]
        assert (folder.parent / picture["key"]).stat().st_size == picture["bytes"]
    spreadsheet = list(csv.DictReader(io.StringIO((folder / "results.csv").read_text())))
    assert [row["pictures"] for row in spreadsheet] == [row["pictures"][0]["key"] for row in rows]


def test_export_copies_the_batch_by_name_into_a_folder_or_a_zip(tmp_path: Path):
    lamps(tmp_path, count=3)
    assert genq("run", "lamps.csv", "--sandbox", cwd=tmp_path).returncode == 0
    stored = tmp_path / "var" / "objects" / "lamps-1"

    to_folder = genq("export", "1", str(tmp_path / "out"), cwd=tmp_path)
    to_zip = genq("export", "1", str(tmp_path / "out.zip"), cwd=tmp_path)

    assert to_folder.returncode == 0 and to_zip.returncode == 0, to_folder.stderr + to_zip.stderr
    for name in ("lamp-1.png", "lamp-2.png", "lamp-3.png", "results.jsonl", "results.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (stored / name).read_bytes()
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        assert {"lamp-1.png", "lamp-2.png", "lamp-3.png", "results.jsonl"} <= set(archive.namelist())
        assert archive.read("lamp-2.png") == (stored / "lamp-2.png").read_bytes()
    assert genq("export", "9", str(tmp_path / "none"), cwd=tmp_path).returncode == 2
