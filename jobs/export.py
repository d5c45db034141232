"""A batch's pictures, sheets and results copied out of the store, into a folder or a .zip.

Pictures keep their names (``hero/walk-1.png``), sheets their folder (``sheets/hero/walk.png`` with its
atlases), and the results, errors and report files come along, so the export is the batch as a person
would hand it on. Everything is read back from the store, wherever it is (a folder, S3, MinIO).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from jobs.errors import NotFound, StorageError
from jobs.models import Asset, Batch, Job
from jobs.storage import Storage, batch_folder

BATCH_FILES = ("results.jsonl", "results.csv", "errors.csv", "report.html")
SHEET_FILES = ("image", "atlas", "aseprite", "godot")


def export_batch(engine: Engine, storage: Storage, batch_id: int, destination: Path) -> int:
    """Copy the batch into ``destination`` (a folder, made if needed, or a path ending in ``.zip``);
    returns how many files were written."""
    with Session(engine) as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"no batch {batch_id}")
        keys = list(
            session.exec(
                select(Asset.key).join(Job, col(Job.id) == col(Asset.job_id)).where(col(Job.batch_id) == batch_id)
            ).all()
        )
    folder = batch_folder(batch_id, batch.name)
    files = list(_files(storage, folder, keys))
    if destination.suffix == ".zip":
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_suffix(".zip.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in files:
                archive.writestr(name, data)
        partial.replace(destination)
    else:
        for name, data in files:
            path = destination / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return len(files)


def _files(storage: Storage, folder: str, picture_keys: list[str]) -> Iterator[tuple[str, bytes]]:
    prefix = f"{folder}/"
    for key in sorted(picture_keys):
        yield key.removeprefix(prefix), storage.get(key)
    for name in BATCH_FILES:
        try:
            yield name, storage.get(prefix + name)
        except StorageError:
            continue  # a batch that ended before the file existed
    try:
        index = json.loads(storage.get(f"{prefix}sheets/index.json"))
    except StorageError:
        return
    yield "sheets/index.json", json.dumps(index, indent=1).encode()
    for sheet in index.get("sheets", []):
        for field in SHEET_FILES:
            if sheet.get(field):
                yield sheet[field], storage.get(prefix + sheet[field])
