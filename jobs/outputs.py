"""What a run leaves behind when its batch ends: the results files, the sprite sheets, the report.

Sheets are gathered here from the batch's rows and packed by ``jobs.sheets``:
- a qtpixel sprite job is a sheet of its own (named as the job, its mode the animation), unless it
  names a ``sheet``;
- rows of any provider naming the same ``sheet`` share one, ordered by ``frame``, then by line, each
  row's animation its ``animation`` (else its sprite mode, else the sheet's last name part).
A frame that failed keeps its place as an empty cell, and the sheet's entry says which.

Each sheet is stored under ``<batch folder>/sheets/`` as ``<sheet>.png``, ``.json`` (TexturePacker
JSON-hash: Phaser, PixiJS), ``.aseprite.json`` and ``.tres`` (Godot 4 SpriteFrames), and listed in
``sheets/index.json`` with the rectangles of its animations, for the report and for people.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from jobs.errors import GenqError
from jobs.models import Asset, Batch, Job
from jobs.storage import Storage, batch_folder

DEFAULT_FPS = 8.0
SHEETS_FOLDER = "sheets"
SHEETS_INDEX = f"{SHEETS_FOLDER}/index.json"


@dataclass
class _FramePlace:
    order: tuple[float, int, int]
    name: str
    animation: str
    fps: float
    key: str | None


@dataclass
class SheetPlan:
    """One sheet's frames in order, with the key of each stored picture (None for a failed frame)."""

    name: str
    frames: list[_FramePlace] = field(default_factory=list)


def sheet_of(job: Job) -> str | None:
    """The sheet a job's pictures are frames of: its ``sheet``, else its own name for a sprite job."""
    spec = job.spec
    if spec.get("sheet"):
        return str(spec["sheet"])
    if spec.get("sprite") and job.provider == "qtpixel":
        return job.name or f"{job.seq:05d}"
    return None


def plan_sheets(
    engine: Engine, batch_id: int, frames_expected: Callable[[Job], int], jobs: Sequence[Job] | None = None
) -> list[SheetPlan]:
    """The batch's sheets and their frames; ``frames_expected(job)``: how many frames a job makes
    (its sprite mode's count), so a failed job still holds its cells. ``jobs``: the batch's jobs in
    order, where the caller has read them already; a batch without sheets reads nothing more."""
    with Session(engine) as session:
        if jobs is None:
            jobs = session.exec(select(Job).where(col(Job.batch_id) == batch_id).order_by(col(Job.seq))).all()
        if all(sheet_of(job) is None for job in jobs):
            return []
        assets = session.exec(
            select(Asset).join(Job, col(Job.id) == col(Asset.job_id)).where(col(Job.batch_id) == batch_id)
        ).all()
    keys: dict[int, dict[int, str]] = {}
    for asset in assets:
        keys.setdefault(asset.job_id, {})[asset.index] = asset.key
    sheets: dict[str, SheetPlan] = {}
    for job in jobs:
        name = sheet_of(job)
        if name is None:
            continue
        spec = job.spec
        stem = job.name or f"{job.seq:05d}"
        animation = str(spec.get("animation") or spec.get("sprite") or name.rsplit("/", 1)[-1])
        fps = float(spec.get("fps") or DEFAULT_FPS)
        stored = keys.get(job.id or 0, {})
        count = max(frames_expected(job), max(stored, default=-1) + 1)
        frame = spec.get("frame")
        place = math.inf if frame is None else float(frame)
        plan = sheets.setdefault(name, SheetPlan(name))
        for index in range(count):
            frame_name = f"{stem}-{index + 1}" if count > 1 else stem
            plan.frames.append(_FramePlace((place, job.line, index), frame_name, animation, fps, stored.get(index)))
    for plan in sheets.values():
        plan.frames.sort(key=lambda f: f.order)
    return list(sheets.values())


def write_sheets(storage: Storage, batch: Batch, plans: Sequence[SheetPlan]) -> list[dict[str, Any]]:
    """Pack and store every sheet; returns the index entries (also written to ``sheets/index.json``).
    A sheet that cannot be packed (past the pixel cap, say) is listed with its reason."""
    if not plans:
        return []
    from jobs.sheets import Frame, SheetOptions, pack_sheet

    assert batch.id is not None
    folder = batch_folder(batch.id, batch.name)
    options = SheetOptions(**(batch.options or {}).get("sheets", {}))
    entries = []
    for plan in plans:
        base = f"{SHEETS_FOLDER}/{plan.name}"
        image = plan.name.rsplit("/", 1)[-1] + ".png"
        frames = [
            Frame(f.name, f.animation, storage.get(f.key) if f.key else None, round(1000 / f.fps)) for f in plan.frames
        ]
        entry: dict[str, Any] = {"name": plan.name, "frames": len(frames)}
        try:
            sheet = pack_sheet(plan.name, frames, options, image=image)
        except GenqError as error:
            entries.append({**entry, "error": str(error)})
            continue
        storage.put(f"{folder}/{base}.png", sheet.png)
        storage.put(f"{folder}/{base}.json", _json(sheet.atlas))
        storage.put(f"{folder}/{base}.aseprite.json", _json(sheet.aseprite))
        storage.put(f"{folder}/{base}.tres", sheet.godot.encode())
        entries.append(
            {
                **entry,
                "image": f"{base}.png",
                "atlas": f"{base}.json",
                "aseprite": f"{base}.aseprite.json",
                "godot": f"{base}.tres",
                "fps": plan.frames[0].fps if plan.frames else DEFAULT_FPS,
                "cell": list(sheet.cell),
                "grid": list(sheet.grid),
                "missing": list(sheet.missing),
                "animations": _animation_rects(sheet.atlas),
            }
        )
    if entries:
        storage.put(f"{folder}/{SHEETS_INDEX}", _json({"sheets": entries}))
    return entries


def _animation_rects(atlas: Mapping[str, Any]) -> dict[str, list[dict[str, int]]]:
    frames = atlas.get("frames", {})
    return {
        animation: [dict(frames[name]["frame"]) for name in names if name in frames]
        for animation, names in atlas.get("animations", {}).items()
    }


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1, ensure_ascii=False).encode()
