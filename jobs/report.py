"""A batch's report: one HTML page in the batch's folder to look at what a run made, cost and lost.

``report.html`` is one self-contained file (its CSS and the few lines of JavaScript that play the
sheets are inline; nothing comes from a CDN) whose links are relative to the batch's folder, so the
same bytes open from a local folder and from an S3/MinIO bucket. The pictures are shown by small WebP
thumbnails stored beside them (``<folder>/thumbs/``) and loaded lazily: a 5,000-picture page stays a
few megabytes of text, and a report written again makes only the thumbnails still missing.

What the page shows is built here as a plain dict; how it looks is the Jinja2 template
``jobs/templates/report.html.j2`` (autoescaped: prompts are user input). No Celery: the database and
the store in, one page out.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote

import jinja2
import obstore
from PIL import Image
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from jobs.errors import StorageError
from jobs.models import Asset, Job, ProviderTask
from jobs.render import duration
from jobs.results import RESULTS_JSONL
from jobs.states import JobState
from jobs.status import BatchStatus, batch_status
from jobs.storage import Storage, batch_folder, storage_error

log = logging.getLogger(__name__)

REPORT = "report.html"
THUMBS = "thumbs"
SHEET_INDEX = "sheets/index.json"
THUMB_SIDE = 160
"""Pixels on a thumbnail's longest side: a grid tile, small enough that thousands load quickly."""
THUMB_QUALITY = 80
THUMB_WORKERS = 8
"""Thumbnails made at once: decoding and encoding release the GIL, and a bucket answers slowly."""
ANIMATION_SIDE = 160
"""Pixels on the longest side an animation is shown at, in whole multiples for pixel art."""
UNSUCCESSFUL = (JobState.FAILED, JobState.CANCELED, JobState.UNCERTAIN)
ENDED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.UNCERTAIN)
"""States shown as cards; the others only while a job is in them (a report of a batch still running)."""
IN_PROGRESS = (JobState.PENDING, JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING, JobState.COLLECTING)


@dataclass(frozen=True)
class AccountFigures:
    name: str
    requests: int
    """Provider requests this batch's jobs sent through the account (submits and polls)."""
    rate_limited: int
    """429 answers met."""
    paused_seconds: float | None
    """Seconds the account was paused while the batch ran; None when not recorded."""


@dataclass(frozen=True)
class RunFigures:
    """What the run planned and spent, as the process that ran it counted; the database alone cannot
    tell a 429 or a pause, nor what was planned."""

    planned_requests: int | None
    planned_credits: int | None
    planned_seconds: float | None
    spent_requests: int
    spent_credits: int
    accounts: tuple[AccountFigures, ...] = ()


@dataclass(frozen=True)
class Picture:
    """One stored picture of the batch, as a grid tile shows it."""

    key: str
    folder: str
    relative: str
    """Its key relative to the batch's folder."""
    width: int
    height: int
    name: str
    prompt: str
    provider: str
    account: str | None

    @property
    def thumb_relative(self) -> str | None:
        """Where its thumbnail goes below the folder; None for a picture stored outside the folder."""
        key = thumbnail_key(self.folder, self.key)
        return key.removeprefix(self.folder + "/") if key else None

    @property
    def thumb_size(self) -> tuple[int, int]:
        return fitted(self.width, self.height)


def write_report(engine: Engine, storage: Storage, batch_id: int, figures: RunFigures | None = None) -> str:
    """Writes ``<batch folder>/report.html`` (and any missing thumbnails); returns its key."""
    status = batch_status(engine, batch_id, error_limit=0)
    folder = batch_folder(status.id, status.name)
    pictures = _pictures(engine, batch_id, folder)
    thumbed = ensure_thumbnails(storage, folder, pictures)
    context = report_context(engine, storage, status, pictures, thumbed, figures)
    key = f"{folder}/{REPORT}"
    _put(storage, key, render_report(context).encode(), "text/html; charset=utf-8")
    return key


def render_report(context: Mapping[str, Any]) -> str:
    return _environment().get_template("report.html.j2").render(context)


def prepare() -> None:
    """Compile the template and load Pillow's formats now. A worker does this as it starts, so the
    first batch it finishes does not pay for it at its end, after its last picture."""
    _environment().get_template("report.html.j2")
    Image.init()


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("jobs", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# -- thumbnails ------------------------------------------------------------------------------------


def ensure_thumbnails(storage: Storage, folder: str, pictures: Iterable[Picture]) -> set[str]:
    """Makes the thumbnails not yet stored; returns the keys of the pictures that have one.

    Which exist is learnt from one listing of ``thumbs/``, not a read per picture. A picture at a key
    never changes within a batch (collecting again writes the same bytes), so a thumbnail once made
    stays right. A picture that cannot be read or decoded gets no thumbnail, and its tile says so.
    """
    existing = _listed(storage, f"{folder}/{THUMBS}/")
    wanted = {p.key: (p, f"{folder}/{p.thumb_relative}") for p in pictures if p.thumb_relative is not None}
    missing = [(picture, key) for picture, key in wanted.values() if key not in existing]
    with ThreadPoolExecutor(max_workers=THUMB_WORKERS) as pool:
        made = pool.map(lambda job: _make_thumbnail(storage, *job), missing)
        done = {picture.key for (picture, _), ok in zip(missing, made, strict=True) if ok}
    return done | {picture.key for picture, key in wanted.values() if key in existing}


def thumbnail_key(folder: str, picture_key: str) -> str | None:
    """The key of a picture's thumbnail (``<folder>/thumbs/<its key below the folder>.webp``), so a
    step that has the picture in hand can make its thumbnail then; None for a key outside the folder."""
    if not picture_key.startswith(f"{folder}/"):
        return None
    return f"{folder}/{THUMBS}/{posixpath.splitext(picture_key.removeprefix(folder + '/'))[0]}.webp"


def fitted(width: int, height: int, side: int = THUMB_SIDE) -> tuple[int, int]:
    """The size of a picture shrunk (never grown) until its longest side is at most ``side`` pixels."""
    scale = min(1.0, side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail(data: bytes) -> bytes:
    """A WebP at most ``THUMB_SIDE`` pixels on its longest side, keeping transparency."""
    with Image.open(io.BytesIO(data)) as image:
        size = fitted(*image.size)
        image.draft("RGB", size)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        small = image.convert("RGBA" if has_alpha else "RGB").resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    small.save(out, "WEBP", quality=THUMB_QUALITY, method=4)
    return out.getvalue()


def _make_thumbnail(storage: Storage, picture: Picture, key: str) -> bool:
    try:
        _put(storage, key, thumbnail(storage.get(picture.key)), "image/webp")
    except (StorageError, OSError, ValueError, Image.DecompressionBombError) as error:
        log.warning("no thumbnail for %s: %s", picture.key, error)
        return False
    return True


def _listed(storage: Storage, prefix: str) -> set[str]:
    try:
        return {meta["path"] for chunk in obstore.list(storage.store, prefix=prefix) for meta in chunk}
    except FileNotFoundError:
        return set()  # a local store whose folder is not made yet
    except Exception as error:
        raise storage_error(error, f"cannot list {prefix} in {storage.url}") from error


def _put(storage: Storage, key: str, data: bytes, content_type: str) -> None:
    """A bucket serves an object with the type it was given (else as a download): a report opened from
    S3 must say it is HTML. Local files take no type (the file name tells it) and go the plain way."""
    if storage.root is not None:
        storage.put(key, data)
        return
    try:
        obstore.put(storage.store, key, data, attributes={"Content-Type": content_type})
    except Exception as error:
        raise storage_error(error, f"cannot write {key} to {storage.url}") from error


# -- what the page shows ---------------------------------------------------------------------------


def _pictures(engine: Engine, batch_id: int, folder: str) -> list[Picture]:
    with Session(engine) as session:
        rows = session.exec(
            select(Asset, Job)
            .join(Job, col(Job.id) == col(Asset.job_id))
            .where(col(Job.batch_id) == batch_id)
            .order_by(col(Job.seq), col(Asset.index))
        ).all()
    per_job: dict[int, int] = {}
    for asset, _ in rows:
        per_job[asset.job_id] = per_job.get(asset.job_id, 0) + 1
    pictures = []
    for asset, job in rows:
        name = job.name or f"#{job.seq}"
        if per_job[asset.job_id] > 1:
            name = f"{name} ({asset.index + 1})"
        pictures.append(
            Picture(
                key=asset.key, folder=folder, relative=posixpath.relpath(asset.key, folder), width=asset.width,
                height=asset.height, name=name, prompt=str(job.spec.get("prompt", "")),
                provider=job.provider, account=job.account,
            )
        )  # fmt: skip
    return pictures


def report_context(
    engine: Engine,
    storage: Storage,
    status: BatchStatus,
    pictures: list[Picture],
    thumbed: set[str],
    figures: RunFigures | None,
) -> dict[str, Any]:
    """Everything the template shows, as plain values; links relative to the batch's folder."""
    folder = batch_folder(status.id, status.name)
    elapsed = _time(status)
    return {
        "batch": {"id": status.id, "name": status.name, "source": status.source, "state": status.state},
        "total": status.total,
        "images": status.images,
        "counts": [{"state": s.value, "count": status.counts[s.value]} for s in ENDED],
        "in_progress": [{"state": s.value, "count": status.counts[s.value]} for s in IN_PROGRESS],
        "lost_answers": status.lost_answers,
        "time": elapsed,
        "costs": _costs(engine, storage, folder, status.id, elapsed["seconds"], figures),
        "accounts": _accounts(engine, status.id, figures),
        "pictures": [_tile(p, p.key in thumbed) for p in pictures],
        "sheets": _sheets(storage, folder),
        "failures": _failures(engine, status),
        "written_at": _when(datetime.now(UTC)),
    }


def _tile(picture: Picture, has_thumb: bool) -> dict[str, Any]:
    width, height = picture.thumb_size
    return {
        "name": picture.name, "prompt": picture.prompt, "provider": picture.provider, "account": picture.account,
        "href": _link(picture.relative),
        "thumb": _link(picture.thumb_relative) if has_thumb and picture.thumb_relative else None,
        "width": width, "height": height, "size": f"{picture.width}×{picture.height}",
    }  # fmt: skip


def _time(status: BatchStatus) -> dict[str, Any]:
    started = _aware(status.created_at)
    ended = _aware(status.finished_at)
    seconds = ((ended or datetime.now(UTC)) - started).total_seconds() if started else None
    return {
        "started": _when(started) if started else None,
        "ended": _when(ended) if ended else None,
        "seconds": seconds,
        "took": duration(seconds) if seconds is not None else None,
    }


def _costs(
    engine: Engine, storage: Storage, folder: str, batch_id: int, seconds: float | None, figures: RunFigures | None
) -> dict[str, Any]:
    """Planned beside spent. Without the run's own figures, requests are counted from the database
    (a provider task per submit plus its polls; a batch poll counts once per task it asked about) and
    credits are summed from the batch's ``results.jsonl``, which prices each row by its provider."""
    if figures is not None:
        return {
            "recorded": True,
            "requests": (figures.planned_requests, figures.spent_requests),
            "credits": (figures.planned_credits, figures.spent_credits),
            "seconds": (_seconds(figures.planned_seconds), _seconds(seconds)),
        }
    with Session(engine) as session:
        tasks, polls = session.exec(
            select(func.count(col(ProviderTask.id)), func.coalesce(func.sum(col(ProviderTask.polls)), 0))
            .join(Job, col(Job.id) == col(ProviderTask.job_id))
            .where(col(Job.batch_id) == batch_id)
        ).one()
    return {
        "recorded": False,
        "requests": (None, int(tasks) + int(polls)),
        "credits": (None, _credits_in_results(storage, folder)),
        "seconds": (None, _seconds(seconds)),
    }


def _credits_in_results(storage: Storage, folder: str) -> int | None:
    try:
        lines = storage.get(f"{folder}/{RESULTS_JSONL}").decode().splitlines()
        return sum(int(json.loads(line).get("credits") or 0) for line in lines if line.strip())
    except (StorageError, ValueError, AttributeError) as error:
        log.info("no credits for %s from its results: %s", folder, error)
        return None


def _accounts(engine: Engine, batch_id: int, figures: RunFigures | None) -> list[dict[str, Any]]:
    """Each account the batch used: its jobs (from the database) beside the run's requests, 429s and
    pauses; without the run's figures, requests from the database and the rest not recorded."""
    with Session(engine) as session:
        jobs = {
            account: count
            for account, count in session.exec(
                select(Job.account, func.count()).where(col(Job.batch_id) == batch_id).group_by(col(Job.account))
            ).all()
            if account is not None
        }
        sent = {
            account: int(tasks) + int(polls)
            for account, tasks, polls in session.exec(
                select(ProviderTask.account, func.count(), func.coalesce(func.sum(col(ProviderTask.polls)), 0))
                .join(Job, col(Job.id) == col(ProviderTask.job_id))
                .where(col(Job.batch_id) == batch_id)
                .group_by(col(ProviderTask.account))
            ).all()
        }
    given = {account.name: account for account in figures.accounts} if figures else {}
    rows = []
    for name in sorted(set(jobs) | set(sent) | set(given)):
        account = given.get(name)
        rows.append(
            {
                "name": name, "jobs": jobs.get(name, 0),
                "requests": account.requests if account else sent.get(name, 0),
                "rate_limited": account.rate_limited if account else None,
                "paused": _seconds(account.paused_seconds) if account else None,
            }
        )  # fmt: skip
    return rows


def _failures(engine: Engine, status: BatchStatus) -> list[dict[str, Any]]:
    """The jobs that did not succeed, grouped by state and reason, the largest group first; failed
    ones in the order of ``genq status`` (the database's, whose collation breaks ties)."""
    batch_id = status.id
    with Session(engine) as session:
        jobs = session.exec(
            select(Job)
            .where(col(Job.batch_id) == batch_id, col(Job.state).in_([s.value for s in UNSUCCESSFUL]))
            .order_by(col(Job.seq))
        ).all()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault((job.state, job.error or ""), []).append(
            {"job": job.seq, "line": job.line, "name": job.name or f"#{job.seq}",
             "prompt": str(job.spec.get("prompt", ""))}
        )  # fmt: skip
    order = {state.value: place for place, state in enumerate(UNSUCCESSFUL)}
    said = {group["reason"]: place for place, group in enumerate(status.failure_reasons)}

    def rank(item: tuple[tuple[str, str], list[dict[str, Any]]]) -> tuple[int, int, int, str]:
        (state, reason), members = item
        return order[state], said.get(reason, len(said)) if state == JobState.FAILED else 0, -len(members), reason

    ranked = sorted(groups.items(), key=rank)
    return [{"state": state, "reason": reason, "jobs": members} for (state, reason), members in ranked]


def _sheets(storage: Storage, folder: str) -> list[dict[str, Any]]:
    """The sheets the finish step packed, from its ``sheets/index.json``; none when there is none."""
    try:
        index = json.loads(storage.get(f"{folder}/{SHEET_INDEX}"))
    except StorageError:
        return []
    except ValueError as error:
        log.warning("%s/%s is not JSON: %s", folder, SHEET_INDEX, error)
        return []
    sheets = []
    for entry in index.get("sheets", []) if isinstance(index, dict) else []:
        if isinstance(entry, dict) and "error" in entry:
            continue  # a sheet that could not be packed (every frame failed): its jobs are among the failures
        try:
            sheets.append(_sheet(entry))
        except (KeyError, TypeError, ValueError) as error:
            log.warning("a sheet of %s is left out of the report: %s", folder, error)
    return sheets


def _sheet(entry: Mapping[str, Any]) -> dict[str, Any]:
    fps = float(entry.get("fps") or 8)
    if not 0 < fps <= 120:
        raise ValueError(f"fps {fps} of sheet {entry['name']!r}")
    animations = []
    for name, rects in dict(entry.get("animations") or {}).items():
        frames = [{axis: int(rect[axis]) for axis in ("x", "y", "w", "h")} for rect in rects]
        if not frames:
            continue
        width, height = max(f["w"] for f in frames), max(f["h"] for f in frames)
        longest = max(width, height, 1)
        scale = ANIMATION_SIDE // longest if longest <= ANIMATION_SIDE else ANIMATION_SIDE / longest
        animations.append(
            {
                "name": str(name), "frames": frames, "width": width, "height": height,
                "shown_width": max(1, round(width * scale)), "shown_height": max(1, round(height * scale)),
            }
        )  # fmt: skip
    files = [(label, entry.get(field)) for label, field in _SHEET_FILES]
    return {
        "name": str(entry["name"]),
        "image": _link(_inside(entry["image"])),
        "files": [(label, _link(_inside(path))) for label, path in files if path],
        "fps": fps,
        "missing": [str(frame) for frame in entry.get("missing") or []],
        "animations": animations,
    }


_SHEET_FILES = (("PNG", "image"), ("atlas JSON", "atlas"), ("Aseprite JSON", "aseprite"), ("Godot .tres", "godot"))


def _inside(path: object) -> str:
    """A path from the sheet index, refused unless it stays inside the batch's folder."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or ":" in path:
        raise ValueError(f"{path!r} is not a path inside the batch's folder")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"{path!r} is not a path inside the batch's folder")
    return path


def _link(relative: str) -> str:
    """A relative URL for a key below the batch's folder: a folder and a bucket resolve it alike."""
    return quote(relative, safe="/-._~")


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(seconds: float | None) -> str | None:
    return duration(seconds) if seconds is not None else None
