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
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError
from sqlalchemy import Table, bindparam, select, update
from sqlmodel import Session

from jobs.db import Executor, transaction, upsert_insert
from jobs.errors import DestinationRefused, GenqError, PictureRateLimited, PictureRefused, RedisUnavailable
from jobs.lifecycle import JOBS, JobState, TaskState, move
from jobs.models import Asset, Batch, Job, ProviderTask, utcnow
from jobs.rediscalls import talking_to_redis
from jobs.storage import batch_folder
from workers.liveness import holder_id
from workers.providers.base import HTTP_ERRORS, InvalidRequest, http_outcome, read_capped, retry_after
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

log = logging.getLogger(__name__)

_BATCHES: Table = Batch.__table__  # type: ignore[attr-defined]
_TASKS: Table = ProviderTask.__table__  # type: ignore[attr-defined]
_ASSETS: Table = Asset.__table__  # type: ignore[attr-defined]

# A collect runs once for every job: its statements are built once, and given their values.
_HOLD = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("where_id"), JOBS.c.state == JobState.COLLECTING.value)
    .values(holder=bindparam("set_holder"), updated_at=bindparam("set_updated_at"))
)
_JOBS_AND_BATCHES = (
    select(
        JOBS.c.id, JOBS.c.batch_id, _BATCHES.c.name, JOBS.c.seq, JOBS.c.name, JOBS.c.error, JOBS.c.account, JOBS.c.state
    )
    .join(_BATCHES, _BATCHES.c.id == JOBS.c.batch_id)
    .where(JOBS.c.id.in_(bindparam("job_ids", expanding=True)))
)
_TASKS_OF = (
    select(_TASKS.c.job_id, _TASKS.c.state, _TASKS.c.error, _TASKS.c.images)
    .where(_TASKS.c.job_id.in_(bindparam("job_ids", expanding=True)))
    .order_by(_TASKS.c.job_id, _TASKS.c.index)
)
_RECORDED = select(_ASSETS.c.job_id, _ASSETS.c.index).where(_ASSETS.c.job_id.in_(bindparam("job_ids", expanding=True)))

_TYPES = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}


@dataclass(frozen=True)
class Collecting:
    """What a collect needs of its job, read in the transaction that names this process its holder."""

    batch_id: int
    batch_name: str
    seq: int
    name: str | None
    error: str | None
    account: str | None
    tasks: list[tuple[str, str | None, list[dict[str, Any]]]]
    """Each provider task's state, error and images, in order."""
    recorded: set[int]
    """The indexes of the pictures recorded already (by an earlier delivery of the collect)."""


@dataclass(frozen=True)
class Fetched:
    """A collecting job whose pictures are stored: what its last write records and how it ends."""

    job_id: int
    batch_id: int
    last: dict[str, Any] | None
    """The last picture's ``Asset`` row, recorded with the move (None when all were recorded before)."""
    error: str | None
    """Why the job failed (some of its tasks made no picture); None when it succeeded."""


def collect_job(runtime: Runtime, job_id: int, *, held: Collecting | None = None) -> int | None:
    """Store every picture of a collecting job and mark it succeeded (or failed, when some of its
    provider tasks made no picture); the id of its batch, for the caller to finish it if it was the
    last. None if the job was not collecting, or another delivery of the collect ended it meanwhile.

    Two transactions when all goes well: the first names this process the job's holder (so the
    reconciler takes it again at once should this process die) and reads what the job needs; the
    last records the last picture and moves the job. Any picture before the last is recorded as soon
    as it is stored, so a collect repeated after a crash fetches only what was not recorded. The
    rows are read as plain columns: a collect runs once for every job, and loading ORM objects
    would cost more than the statements themselves. ``held``: what ``hold_collecting`` read when it
    named this process the holder already; then the first transaction is not needed.
    """
    if held is None:
        with transaction(runtime.engine) as session:
            holding = {"where_id": job_id, "set_holder": holder_id(), "set_updated_at": utcnow()}
            if session.execute(_HOLD, holding).rowcount != 1:  # type: ignore[attr-defined]
                return None
            held = _collecting(session, [job_id]).get(job_id)
        if held is None:
            return None
    fetched = fetch_pictures(runtime, job_id, held)
    with transaction(runtime.engine) as session:
        return fetched.batch_id if record_collected(session, fetched) else None


def fetch_pictures(runtime: Runtime, job_id: int, held: Collecting) -> Fetched:
    """Download, check and store the job's pictures not recorded yet; every one before the last is
    recorded as soon as it is stored, the last is left to ``record_collected``."""
    tasks = held.tasks
    urls = [image["url"] for _, _, images in tasks for image in images]
    todo = [index for index in range(len(urls)) if index not in held.recorded]
    folder, stem = batch_folder(held.batch_id, held.batch_name), held.name or f"{held.seq:05d}"
    last: dict[str, Any] | None = None
    for index in todo:
        url = urls[index]
        try:
            data = download(runtime, url)
        except PictureRateLimited as limited:
            pause_if_own_host(runtime, held.account, limited)
            raise
        try:
            picture = check_picture(data, max_pixels=runtime.settings.max_image_pixels)
        except PictureRefused as refused:  # the reason names the picture, as a download's does
            raise PictureRefused(f"image {shown_url(url)}: {refused}", final=refused.final) from None
        key = asset_key(folder, stem, index, len(urls), picture.extension)
        runtime.storage.put(key, picture.data)
        asset = _asset(job_id, index, key, picture)
        if index == todo[-1]:
            last = asset
        else:
            with transaction(runtime.engine) as session:
                _add_once(session, asset)
    missing = [(state, why) for state, why, _ in tasks if state == TaskState.FAILED.value]
    if not missing:
        return Fetched(job_id, held.batch_id, last, None)
    # The pictures that were made are kept; the job did not make all it asked for.
    why = held.error or f"{len(missing)} of {len(tasks)} tasks made no picture: {missing[0][1]}"
    return Fetched(job_id, held.batch_id, last, why)


def record_all_collected(runtime: Runtime, fetched: Sequence[Fetched]) -> set[int]:
    """``record_collected`` for each of the jobs, in one transaction; the ids of those that moved."""
    with transaction(runtime.engine) as session:
        return {item.job_id for item in fetched if record_collected(session, item)}


def record_collected(session: Executor, fetched: Fetched) -> bool:
    """Record the job's last picture and move it ``collecting -> succeeded`` (or failed), in the
    session's transaction; whether it moved (another delivery may have ended it meanwhile). A
    poll's collects are recorded in one transaction, each of its jobs moved on its own."""
    if fetched.last is not None:
        _add_once(session, fetched.last)
    target = JobState.FAILED if fetched.error is not None else JobState.SUCCEEDED
    return move(session, fetched.job_id, JobState.COLLECTING, target, error=fetched.error, holder=None)


def hold_collecting(runtime: Runtime, job_ids: Sequence[int]) -> dict[int, Collecting]:
    """Name this process the holder of those of the jobs that are collecting, in one statement, before
    any of them is collected: should the process die while it collects them one after another, the
    reconciler takes every one of them at once, not only the one in hand. What each collect needs
    is read in the same transaction, for all of them at once; the jobs not collecting are left out."""
    if not job_ids:
        return {}
    with transaction(runtime.engine) as session:
        session.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(job_ids), JOBS.c.state == JobState.COLLECTING.value)
            .values(holder=holder_id(), updated_at=utcnow())
        )
        return _collecting(session, job_ids)


def _collecting(session: Executor, job_ids: Sequence[int]) -> dict[int, Collecting]:
    """What the collect of each of the jobs still collecting needs, in three statements for them all."""
    jobs = session.execute(_JOBS_AND_BATCHES, {"job_ids": list(job_ids)}).all()
    tasks: dict[int, list[tuple[str, str | None, list[dict[str, Any]]]]] = {}
    for job_id, state, error, images in session.execute(_TASKS_OF, {"job_ids": list(job_ids)}):
        tasks.setdefault(job_id, []).append((state, error, images))
    recorded: dict[int, set[int]] = {}
    for job_id, index in session.execute(_RECORDED, {"job_ids": list(job_ids)}):
        recorded.setdefault(job_id, set()).add(index)
    return {
        job_id: Collecting(
            batch_id, batch_name, seq, name, error, account, tasks.get(job_id, []), recorded.get(job_id, set())
        )
        for job_id, batch_id, batch_name, seq, name, error, account, state in jobs
        if state == JobState.COLLECTING.value
    }


def collect_failed(runtime: Runtime, job_id: int, error: GenqError, *, retry_in: float | None) -> None:
    """A collect that raised ``error`` (a picture refused, a store that refused a write): one worker
    log line naming the job and its account (never a key), then the job fails with the reason, unless
    it is to be tried again in ``retry_in`` seconds. A refusal is seen in the log, not only in the row."""
    with Session(runtime.engine) as session:
        job = session.get(Job, job_id)
    account = job.account if job is not None else None
    step = "fail" if retry_in is None else f"retry in {retry_in:g} s"
    log.warning("collect of job %s on %s: %s (%s): %s", job_id, account, type(error).__name__, step, error)
    if retry_in is None:
        fail_collect(runtime, job_id, str(error))


def fail_collect(runtime: Runtime, job_id: int, reason: str) -> None:
    with transaction(runtime.engine) as session:
        move(session, job_id, JobState.COLLECTING, JobState.FAILED, error=reason, holder=None)


def asset_key(folder: str, stem: str, index: int, total: int, extension: str) -> str:
    """Where a job's picture is stored: below its batch's ``folder``, named by the job's name (or its
    place in the batch), numbered when the job made more than one."""
    suffix = f"-{index + 1}" if total > 1 else ""
    return f"{folder}/{stem}{suffix}.{extension}"


def download(runtime: Runtime, url: str) -> bytes:
    """The picture's bytes, at most ``max_image_bytes`` of them.

    Redirects (a CDN's 302) are followed here, hop by hop, rather than by httpx: each hop still goes
    through the guard like the first, and a refusal can then say which hop it was. Reasons show a
    URL without its query (``shown_url``): a signed link's query is a credential.
    """
    limit = runtime.settings.max_image_bytes
    if url.startswith("data:"):
        return _inline(url, limit)
    target = _parsed(url)
    shown = _shown(target)
    request = runtime.http.build_request("GET", target)
    hops = 0
    try:
        while True:
            response = runtime.http.send(request, stream=True, follow_redirects=False)
            try:
                if response.next_request is None:
                    return _body(response, shown, limit)
                request = response.next_request
            finally:
                response.close()
            hops += 1
            if hops > runtime.http.max_redirects:
                raise PictureRefused(f"image {shown}: more than {runtime.http.max_redirects} redirects", final=True)
    except DestinationRefused as error:
        hop = f" redirected to {shown_url(str(request.url))}," if hops else ""
        raise PictureRefused(f"image {shown}:{hop} refused before connecting: {error}", final=True) from None
    except HTTP_ERRORS as error:  # every other httpx failure, translated as a provider call's are
        outcome = http_outcome(error, request.url, paid=False)
        final = isinstance(outcome, InvalidRequest)  # a URL httpx cannot take: fetching again cannot help
        raise PictureRefused(f"image {shown} could not be downloaded: {outcome}", final=final) from None


def pause_if_own_host(runtime: Runtime, account: str | None, limited: PictureRateLimited) -> None:
    """A 429 from the provider's own host counts against the account as any request of it does: the
    account pauses for the fleet (submits and polls too) until the Retry-After. A CDN's 429 is the
    CDN's: only this download waits."""
    settings = runtime.accounts.get(account or "")
    if settings is None or httpx.URL(settings.base_url).host != limited.host:
        return
    try:
        with talking_to_redis(f"pausing account {settings.name}"):
            why = "rate limited by the provider (429 to a download)"
            runtime.limiter.pause(settings.name, limited.retry_after, why)
    except RedisUnavailable as error:
        log.warning("account %s not paused after a download's 429: %s", settings.name, error)


def shown_url(url: str) -> str:
    """``url`` as reasons and log lines show it: scheme, host, port and path, without the query, the
    fragment or user info (a signed link carries its token there), and not endlessly long."""
    if url.startswith("data:"):
        return "(sent inline)"
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return _clip(repr(url.split("?", 1)[0].split("#", 1)[0]))
    return _shown(parsed)


def _shown(url: httpx.URL) -> str:
    return _clip(f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{url.path}")


def _parsed(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise PictureRefused(f"image {shown_url(url)}: not a URL", final=True) from None


def _body(response: httpx.Response, shown: str, limit: int) -> bytes:
    """The body of a picture's answer, read as it comes and never past ``limit`` bytes."""
    if response.status_code in (403, 404, 410):
        raise PictureRefused(f"image {shown} answered {response.status_code}", final=True)
    if response.status_code == 429:
        wait = retry_after(response)
        raise PictureRateLimited(f"image {shown} answered 429 (Retry-After {wait:g} s)", retry_after=wait,
                                 host=response.url.host)  # fmt: skip
    if not response.is_success:
        raise PictureRefused(f"image {shown} answered {response.status_code}", final=False)
    declared = int(response.headers.get("content-length") or 0)
    if declared > limit:
        raise PictureRefused(f"image {shown} is {declared} bytes, over the {limit} byte limit", final=True)
    body = read_capped(response, limit)
    if body is None:
        raise PictureRefused(f"image {shown} is over the {limit} byte limit", final=True)
    return body


def check_picture(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """The picture, proven readable; its size is checked from the header before anything is decoded,
    so a small file that would unpack to gigabytes (a decompression bomb) is refused unread.

    Whatever Pillow raises on the way is a final refusal: its format plugins raise what their
    parsers meet on a hostile file (``OSError``, ``SyntaxError``, ``struct.error``, ``zlib.error``,
    ``ValueError``, ``EOFError``, ``IndexError``...), and the same bytes would fail the same way
    again. Only Pillow's calls are inside the ``try``, so no error of ours is taken for a bad picture.
    """
    try:
        with warnings.catch_warnings():
            # Below Pillow's refusal its warning is only noise: the pixel cap below is lower.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height, kind = image.width, image.height, image.format
                if width * height <= max_pixels:
                    image.verify()
    except Image.DecompressionBombError as error:
        raise PictureRefused(_bomb(data, error), final=True) from None
    except Exception as error:  # every Pillow failure: see the docstring
        raise PictureRefused(f"not a readable image: {_unreadable(data, error)}", final=True) from None
    if width * height > max_pixels:
        raise PictureRefused(
            f"a picture of {width}x{height} ({width * height / 1e6:.0f} MP), over the "
            f"{max_pixels / 1e6:.0f} MP limit; not decoded",
            final=True,
        )
    if kind not in _TYPES:
        raise PictureRefused(f"an image of type {kind}, not PNG, JPEG or WebP", final=True)
    content_type, extension = _TYPES[kind]
    return Picture(data, width, height, content_type, extension)


def _bomb(data: bytes, error: Image.DecompressionBombError) -> str:
    """The reason for a picture past Pillow's bomb guard, with the size its header declares."""
    size = declared_size(data)
    if size is None:  # a format that checks while it opens (GIF frames, DCX): Pillow's words say it
        return f"a decompression bomb ({len(data)} bytes); not decoded: {_clip(str(error))}"
    width, height = size
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return (
        f"a decompression bomb: {width}x{height} ({width * height / 1e6:.0f} MP) in {len(data)} bytes, past "
        f"Pillow's limit of {limit / 1e6:.0f} MP; not decoded"
    )


def declared_size(data: bytes) -> tuple[int, int] | None:
    """The width and height a picture's header declares, read as ``Image.open`` reads it (the first
    format plugin that takes the file) but without its bomb check, which refuses before saying the
    size. Only the header is read; nothing is decoded. None when no plugin reads a size."""
    Image.init()
    prefix = data[:16]
    for kind in Image.ID:
        factory, accept = Image.OPEN[kind]
        taken = accept(prefix) if accept is not None else True
        if not taken or isinstance(taken, str):  # a str is a plugin's warning that it does not take it
            continue
        try:
            with factory(io.BytesIO(data), "") as image:
                return image.size
        except Exception:  # not this plugin's file, or its header is broken: as Image.open, the next
            continue
    return None


def _unreadable(data: bytes, error: Exception) -> str:
    """What the bytes look like and what Pillow said, in a few words."""
    if isinstance(error, UnidentifiedImageError):  # its message names a BytesIO object, not the file
        said = "no image format recognised"
    else:
        said = f"{type(error).__name__}: {_clip(str(error))}"
    return f"{looks_like(data)} ({said})"


def looks_like(data: bytes) -> str:
    """A few words on what a body that should have been a picture is: an HTML page is a login wall or
    an error page served with 200, which says more than Pillow's words do."""
    if not data:
        return "an empty body"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return f"an HTML page of {len(data)} bytes"
    if head.startswith((b"{", b"[")):
        return f"a JSON body of {len(data)} bytes"
    if head.startswith(b"<"):
        return f"an XML or HTML body of {len(data)} bytes"
    return f"{len(data)} bytes"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _asset(job_id: int, index: int, key: str, picture: Picture) -> dict[str, Any]:
    """An ``Asset`` row's values."""
    return {
        "job_id": job_id,
        "index": index,
        "key": key,
        "sha256": hashlib.sha256(picture.data).hexdigest(),
        "bytes": len(picture.data),
        "width": picture.width,
        "height": picture.height,
        "content_type": picture.content_type,
        "created_at": utcnow(),
    }


def _add_once(session: Executor, asset: dict[str, Any]) -> None:
    """Record the picture in the session's transaction, unless an earlier delivery of the same
    collect recorded it (the ``(job_id, index)`` key): the transaction goes on either way."""
    session.execute(_insert_once(upsert_insert(session)), asset)


@lru_cache(maxsize=4)
def _insert_once(insert: Callable[..., Any]) -> Any:
    """The dialect's insert of an asset that does nothing where it is recorded already; built once."""
    return insert(_ASSETS).on_conflict_do_nothing(index_elements=["job_id", "index"])


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
