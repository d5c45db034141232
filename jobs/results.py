"""A batch's results, written beside its pictures when it ends: one line per input row to act on.

``results.jsonl`` and ``results.csv`` carry each row's line, name, own fields (prompt and parameters),
state, reason, provider task ids, credits and pictures (key, sha256, size). ``errors.csv`` holds only
the rows that did not succeed, in the batch-file format, so ``genq run errors.csv`` sends just those
(``genq retry BATCH --failed`` does the same within the batch). No Celery here: the database and
the store in, files out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from jobs.models import Asset, Batch, Job, ProviderTask
from jobs.states import JobState
from jobs.storage import Storage, batch_folder

RESULTS_JSONL, RESULTS_CSV, ERRORS_CSV = "results.jsonl", "results.csv", "errors.csv"
_REFERENCE_SEPARATOR = "|"
_OPTION_PREFIX = "options."


@dataclass(frozen=True)
class PictureResult:
    key: str
    sha256: str
    bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class RowResult:
    """What became of one row of the batch file."""

    line: int
    job: int
    name: str | None
    fields: dict[str, Any]
    """The row as the file gave it (defaults applied): prompt, provider and parameters."""
    state: str
    reason: str | None
    provider: str
    account: str | None
    task_ids: list[str]
    credits: int
    """Credits the provider charged for it: the adapter's cost for a row that got its pictures, else 0."""
    pictures: list[PictureResult] = field(default_factory=list)
    sheet: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The row as ``asdict`` gives it, built without its deep copy: a batch's end writes one for
        every row, and ``json.dumps`` only reads it."""
        row = {name: getattr(self, name) for name in _ROW_FIELDS}
        row["pictures"] = [asdict(picture) for picture in self.pictures]
        return row


_ROW_FIELDS = tuple(f.name for f in dataclass_fields(RowResult))


def row_results(
    engine: Engine,
    batch_id: int,
    *,
    credits: Callable[[Job, int], int] = lambda _job, pictures: pictures,
    sheet_of: Callable[[Job], str | None] = lambda job: job.spec.get("sheet"),
    jobs: Sequence[Job] | None = None,
) -> list[RowResult]:
    """Every row's result in file order. ``credits(job, pictures)``: what the job cost, by its
    provider's price; ``sheet_of``: the sheet its pictures are frames of; ``jobs``: the batch's jobs
    in order, where the caller has read them already (a batch's end reads them once for all its
    outputs: building a row object costs more than the query that finds it)."""
    with Session(engine) as session:
        if jobs is None:
            jobs = session.exec(select(Job).where(col(Job.batch_id) == batch_id).order_by(col(Job.seq))).all()
        assets = session.exec(
            select(Asset).join(Job, col(Job.id) == col(Asset.job_id)).where(col(Job.batch_id) == batch_id)
        ).all()
        tasks = session.exec(
            select(ProviderTask.job_id, ProviderTask.remote_id)
            .join(Job, col(Job.id) == col(ProviderTask.job_id))
            .where(col(Job.batch_id) == batch_id)
            .order_by(col(ProviderTask.job_id), col(ProviderTask.index), col(ProviderTask.id))
        ).all()
    pictures: dict[int, list[PictureResult]] = {}
    for asset in sorted(assets, key=lambda a: (a.job_id, a.index)):
        pictures.setdefault(asset.job_id, []).append(
            PictureResult(asset.key, asset.sha256, asset.bytes, asset.width, asset.height)
        )
    task_ids: dict[int, list[str]] = {}
    for job_id, remote_id in tasks:
        task_ids.setdefault(job_id, []).append(remote_id)
    results = []
    for job in jobs:
        assert job.id is not None
        stored = pictures.get(job.id, [])
        results.append(
            RowResult(
                line=job.line, job=job.seq, name=job.name, fields=dict(job.spec), state=job.state, reason=job.error,
                provider=job.provider, account=job.account, task_ids=task_ids.get(job.id, []),
                credits=credits(job, len(stored)) if stored else 0, pictures=stored, sheet=sheet_of(job),
            )
        )  # fmt: skip
    return results


def results_jsonl(results: Sequence[RowResult]) -> bytes:
    return "".join(json.dumps(result.to_json(), ensure_ascii=False) + "\n" for result in results).encode()


_CSV_COLUMNS = (
    "line", "job", "name", "state", "reason", "provider", "account", "prompt", "fields", "task_ids", "credits",
    "pictures", "sha256", "bytes", "sheet",
)  # fmt: skip


def results_csv(results: Sequence[RowResult]) -> bytes:
    """The same as the JSONL, a row a line for a spreadsheet: the fields other than the prompt as JSON,
    lists space-separated."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(_CSV_COLUMNS)
    for r in results:
        others = {key: value for key, value in r.fields.items() if key not in ("prompt", "provider", "name")}
        writer.writerow(
            [
                r.line, r.job, r.name or "", r.state, r.reason or "", r.provider, r.account or "",
                r.fields.get("prompt", ""), json.dumps(others, ensure_ascii=False) if others else "",
                " ".join(r.task_ids), r.credits, " ".join(p.key for p in r.pictures),
                " ".join(p.sha256 for p in r.pictures), " ".join(str(p.bytes) for p in r.pictures), r.sheet or "",
            ]
        )  # fmt: skip
    return out.getvalue().encode()


def errors_csv(results: Sequence[RowResult]) -> bytes:
    """The rows that did not succeed, as a batch file genq reads back (only its header when every row
    succeeded, so a file left by an earlier end never offers work that is done)."""
    failed = [r for r in results if r.state != JobState.SUCCEEDED]
    rows = [batch_file_cells(r.fields) for r in failed]
    columns = ["prompt", "provider", "name"]
    for row in rows:
        columns += [column for column in row if column not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def batch_file_cells(fields: Mapping[str, Any]) -> dict[str, str]:
    """One row's fields as a CSV batch file spells them: ``references`` joined by ``|``, each option in
    an ``options.<name>`` column."""
    cells: dict[str, str] = {}
    for key, value in fields.items():
        if key == "options" and isinstance(value, Mapping):
            for option, option_value in value.items():
                cells[_OPTION_PREFIX + str(option)] = _cell(option_value)
        elif key == "references" and isinstance(value, list | tuple):
            cells[key] = _REFERENCE_SEPARATOR.join(str(url) for url in value)
        elif value is not None:
            cells[key] = _cell(value)
    return cells


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def write_results(storage: Storage, batch: Batch, results: Sequence[RowResult]) -> str:
    """Write the three files into the batch's folder; returns the key of ``results.jsonl``, written
    last, so a batch whose row names it has all three."""
    assert batch.id is not None
    folder = batch_folder(batch.id, batch.name)
    storage.put(f"{folder}/{RESULTS_CSV}", results_csv(results))
    storage.put(f"{folder}/{ERRORS_CSV}", errors_csv(results))
    storage.put(f"{folder}/{RESULTS_JSONL}", results_jsonl(results))
    return f"{folder}/{RESULTS_JSONL}"
