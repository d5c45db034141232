"""Finish: when every job of a batch is final, the batch is final, with a manifest in storage.

The manifest (JSONL and CSV, one line per job) is written before the batch row changes, so a batch
marked final always has one; two workers finishing the same batch write the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.lifecycle import FINAL, BatchState, JobState
from jobs.models import Asset, Batch, Job, utcnow
from jobs.storage import batch_folder
from workers.runtime import Runtime


def job_ended(runtime: Runtime, job_id: int) -> None:
    """Call after a job reached a final state: finishes its batch if it was the last."""
    with Session(runtime.engine) as session:
        job = session.get(Job, job_id)
    if job is not None:
        finish_batch_if_done(runtime, job.batch_id)


def finish_batch_if_done(runtime: Runtime, batch_id: int) -> bool:
    with Session(runtime.engine) as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.state != BatchState.RUNNING:
            return False
        counts = dict(
            session.exec(
                select(Job.state, func.count()).where(col(Job.batch_id) == batch_id).group_by(col(Job.state))
            ).all()
        )
    if any(state not in FINAL for state in counts):
        return False
    state = BatchState.SUCCEEDED if set(counts) <= {JobState.SUCCEEDED.value} else BatchState.FAILED
    manifest_key = write_manifest(runtime, batch)
    with session_scope(runtime.engine) as session:
        moved = session.execute(
            update(Batch)
            .where(col(Batch.id) == batch_id, col(Batch.state) == BatchState.RUNNING.value)
            .values(state=state.value, finished_at=utcnow(), manifest_key=manifest_key)
        )
        return bool(moved.rowcount == 1)  # type: ignore[attr-defined]


def manifest_rows(runtime: Runtime, batch: Batch) -> list[dict[str, Any]]:
    with Session(runtime.engine) as session:
        jobs = session.exec(select(Job).where(col(Job.batch_id) == batch.id).order_by(col(Job.seq))).all()
        assets = session.exec(
            select(Asset).join(Job, col(Job.id) == col(Asset.job_id)).where(col(Job.batch_id) == batch.id)
        ).all()
    by_job: dict[int, list[Asset]] = {}
    for asset in sorted(assets, key=lambda a: (a.job_id, a.index)):
        by_job.setdefault(asset.job_id, []).append(asset)
    return [
        {
            "job": job.seq,
            "line": job.line,
            "name": job.name,
            "provider": job.provider,
            "account": job.account,
            "state": job.state,
            "error": job.error,
            "prompt": job.spec.get("prompt"),
            "images": [
                {"key": a.key, "sha256": a.sha256, "bytes": a.bytes, "width": a.width, "height": a.height}
                for a in by_job.get(job.id or 0, [])
            ],
        }
        for job in jobs
    ]


def write_manifest(runtime: Runtime, batch: Batch) -> str:
    rows = manifest_rows(runtime, batch)
    assert batch.id is not None
    folder = batch_folder(batch.id, batch.name)
    jsonl = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    runtime.storage.put(f"{folder}/manifest.jsonl", jsonl.encode())
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["job", "line", "name", "provider", "account", "state", "error", "image_keys"])
    for row in rows:
        writer.writerow(
            [
                row["job"],
                row["line"],
                row["name"] or "",
                row["provider"],
                row["account"] or "",
                row["state"],
                row["error"] or "",
                " ".join(image["key"] for image in row["images"]),
            ]
        )
    runtime.storage.put(f"{folder}/manifest.csv", out.getvalue().encode())
    return f"{folder}/manifest.jsonl"
