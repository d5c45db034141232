"""Collect: copy a finished job's pictures into our storage at once (remote links expire), checked.

A picture is downloaded with a size cap, opened with Pillow to prove it is a real image, stored under
a stable key and recorded as an Asset. Collecting again after a crash rewrites the same keys and
skips the assets already recorded, so it is safe to repeat.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from dataclasses import dataclass

import httpx
from PIL import Image, UnidentifiedImageError
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.errors import DestinationRefused, PictureRefused
from jobs.lifecycle import JobState, TaskState, move
from jobs.models import Asset, Batch, Job, ProviderTask, utcnow
from jobs.storage import batch_folder
from workers.liveness import holder_id
from workers.runtime import Runtime


@dataclass(frozen=True)
class Picture:
    data: bytes
    width: int
    height: int
    content_type: str
    extension: str


DEFAULT_MAX_PIXELS = 64_000_000
"""Pixels a picture may have (``GENQ_MAX_IMAGE_PIXELS``), below Pillow's own bomb guard."""

_TYPES = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}


def collect_job(runtime: Runtime, job_id: int) -> bool:
    """Store every picture of a collecting job and mark it succeeded; False if it was not collecting."""
    with Session(runtime.engine) as session:
        job = session.get(Job, job_id)
        if job is None or job.state != JobState.COLLECTING:
            return False
        batch = session.get(Batch, job.batch_id)
        tasks = list(
            session.exec(
                select(ProviderTask).where(col(ProviderTask.job_id) == job_id).order_by(col(ProviderTask.index))
            ).all()
        )
        done = set(session.exec(select(Asset.index).where(col(Asset.job_id) == job_id)).all())
    assert batch is not None
    with session_scope(runtime.engine) as session:
        # Named as its holder, so the reconciler takes it again at once should this process die.
        session.execute(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.state) == JobState.COLLECTING.value)
            .values(holder=holder_id(), updated_at=utcnow())
        )
    urls = [image["url"] for task in tasks for image in task.images]
    for index, url in enumerate(urls):
        if index in done:
            continue
        picture = check_picture(download(runtime, url), max_pixels=runtime.settings.max_image_pixels)
        key = asset_key(batch, job, index, len(urls), picture.extension)
        runtime.storage.put(key, picture.data)
        _record(runtime, job_id, index, key, picture)
    missing = [task for task in tasks if task.state == TaskState.FAILED.value]
    with session_scope(runtime.engine) as session:
        if missing:  # the pictures that were made are kept; the job did not make all it asked for
            reason = job.error or f"{len(missing)} of {len(tasks)} tasks made no picture: {missing[0].error}"
            return move(session, job_id, JobState.COLLECTING, JobState.FAILED, error=reason, holder=None)
        return move(session, job_id, JobState.COLLECTING, JobState.SUCCEEDED, error=None, holder=None)


def fail_collect(runtime: Runtime, job_id: int, reason: str) -> None:
    with session_scope(runtime.engine) as session:
        move(session, job_id, JobState.COLLECTING, JobState.FAILED, error=reason)


def asset_key(batch: Batch, job: Job, index: int, total: int, extension: str) -> str:
    stem = job.name or f"{job.seq:05d}"
    suffix = f"-{index + 1}" if total > 1 else ""
    assert batch.id is not None
    return f"{batch_folder(batch.id, batch.name)}/{stem}{suffix}.{extension}"


def download(runtime: Runtime, url: str) -> bytes:
    limit = runtime.settings.max_image_bytes
    if url.startswith("data:"):
        return _inline(url, limit)
    try:
        # Redirects are followed (a CDN's 302), each hop checked by the guard like the first.
        with runtime.http.stream("GET", url, follow_redirects=True) as response:
            if response.status_code in (403, 404, 410):
                raise PictureRefused(f"image {url} answered {response.status_code}", final=True)
            if not response.is_success:
                raise PictureRefused(f"image {url} answered {response.status_code}", final=False)
            declared = int(response.headers.get("content-length") or 0)
            if declared > limit:
                raise PictureRefused(f"image {url} is {declared} bytes, over the {limit} byte limit", final=True)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise PictureRefused(f"image {url} is over the {limit} byte limit", final=True)
            return bytes(body)
    except DestinationRefused as error:
        raise PictureRefused(f"image URL refused: {error}", final=True) from None
    except httpx.RequestError as error:  # every httpx failure of a request, DecodingError included
        raise PictureRefused(f"image {url} could not be downloaded: {type(error).__name__}", final=False) from None


def check_picture(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """The picture, proven readable; its size is checked from the header before anything is decoded,
    so a small file that would unpack to gigabytes (a decompression bomb) is refused unread."""
    try:
        with warnings.catch_warnings():
            # Below Pillow's refusal its warning is only noise: the pixel cap below is lower.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height, kind = image.width, image.height, image.format
                if width * height > max_pixels:
                    raise PictureRefused(
                        f"a picture of {width}x{height} ({width * height / 1e6:.0f} MP), over the "
                        f"{max_pixels / 1e6:.0f} MP limit",
                        final=True,
                    )
                image.verify()
    except Image.DecompressionBombError as error:
        raise PictureRefused(f"a decompression bomb: {error}", final=True) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise PictureRefused(f"not a readable image ({len(data)} bytes): {error}", final=True) from None
    if kind not in _TYPES:
        raise PictureRefused(f"an image of type {kind}, not PNG, JPEG or WebP", final=True)
    content_type, extension = _TYPES[kind]
    return Picture(data, width, height, content_type, extension)


def _record(runtime: Runtime, job_id: int, index: int, key: str, picture: Picture) -> None:
    try:
        with session_scope(runtime.engine) as session:
            session.add(
                Asset(
                    job_id=job_id,
                    index=index,
                    key=key,
                    sha256=hashlib.sha256(picture.data).hexdigest(),
                    bytes=len(picture.data),
                    width=picture.width,
                    height=picture.height,
                    content_type=picture.content_type,
                )
            )
    except IntegrityError:
        pass  # recorded by an earlier delivery of the same collect


def _inline(url: str, limit: int) -> bytes:
    """The bytes of a ``data:`` URL, as a provider sends a picture inline."""
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise PictureRefused("an inline image is not base64", final=True)
    if len(payload) * 3 // 4 > limit:
        raise PictureRefused(f"an inline image is over the {limit} byte limit", final=True)
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise PictureRefused("an inline image is not valid base64", final=True) from None
