"""QT Pixel as its seed (003) documents it: pixel art by single task or by sprite batch, polled by id.

Served under ``/qtpixel``, so an account's ``base_url`` is ``http://127.0.0.1:PORT/qtpixel`` (the real one
is ``https://pixel.qingchencloud.com``). Ids are integers, shared by every key; another key's task or
batch is not found. Errors read ``{"error": M, "details": D}``; the ``error`` words are the seed's
status-code table, the ``details`` are ours. A finished picture's ``image_path`` is relative to the
base (``/static/gallery/7.png``) and served without a key, as is a signed download link.

Where the seed is silent, the choice made here is marked "our choice": the picture size (a 32-cell
grid, ``scale`` pixels a cell), defaults, the shape of ``duplicates_found``, 403 for an empty balance
and 429 for the rate limit (the seed lists neither), and the wording of every ``details``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.api import ApiError, ProviderApi, json_object, register
from sandbox.images import draw, encode
from sandbox.state import (
    UNSAFE_TRIGGER,
    Account,
    Phase,
    Picture,
    StoredFile,
    Submission,
    Task,
    picture_seed,
)

SPRITE_FRAMES = {"walk": 4, "idle": 2, "attack": 3, "directions": 4}
"""The sprite modes and the frames each makes; ``count`` is set from here whatever was sent."""
MODES = (*SPRITE_FRAMES, "variations", "random")
DEFAULT_MODE = "random"
MAX_COUNT = 4
DEFAULT_BATCH_COUNT = 4  # our choice: the seed gives the range 1-4, no default
BACKGROUNDS = ("transparent", "white")
DEFAULT_BACKGROUND = "white"  # our choice
DEFAULT_SCALE = 20
MAX_SCALE = 50  # our choice: the seed gives only the default
GRID = 32
"""Cells on a picture's side (our choice); each cell is ``scale`` pixels, so 640 px at the default."""
PAGE_SIZE = 20
MAX_BASE64 = 10
"""Pictures one answer may carry inline; past it ``base64_limited`` is true."""
LINK_SECONDS = 3600
SIGNING_KEY = b"qtpixel-sandbox-download-links"
"""Signs download links; fixed, so links handed out before a restart of the sandbox still answer."""
TASK_KEY = "qtpixel-"
"""Prefix of a task's id in the shared world, where the bare integers could meet another provider's ids."""
BATCH_TASK_FIELDS = ("id", "status", "image_path", "error_msg", "image_base64")
"""What a batch's answer shows of each of its tasks (with ``batch_index``)."""
STATUS_WORDS = {
    Phase.QUEUED: "pending",
    Phase.RUNNING: "processing",
    Phase.SUCCEEDED: "completed",
    Phase.FAILED: "failed",
}

# The seed's words for each HTTP status, used as ``error``.
BAD_REQUEST = "请求错误 - 参数无效"
UNAUTHORIZED = "未授权 - API Key 无效"
FORBIDDEN = "禁止访问 - 无权限"
NOT_FOUND = "未找到 - 资源不存在"
SERVER_ERROR = "服务器错误 - 内部错误"
TOO_MANY_REQUESTS = "请求过于频繁"  # our choice: the seed lists no 429
REFUSAL = "⚠️ 生成失败: AI 拒绝处理此请求 (可能包含敏感内容)"
"""The seed's content-safety refusal, the ``error_msg`` of the refused task."""
GENERATION_FAILED = "⚠️ 生成失败: 上游模型繁忙,请稍后重试"  # our choice for an ordinary failure


def invalid(details: str) -> ApiError:
    return ApiError(400, BAD_REQUEST, details)


@dataclass(frozen=True)
class Generation:
    """A validated generate or batch-generate body, defaults filled in."""

    prompt: str
    mode: str | None
    """None for a single ``/generate``; a batch's mode otherwise."""
    count: int
    background: str
    scale: int
    force: bool

    @classmethod
    def parse(cls, body: dict[str, Any] | None, *, batch: bool) -> Generation:
        if body is None:
            raise invalid("request body must be a JSON object")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid("prompt is required")
        background = body.get("background", DEFAULT_BACKGROUND)
        if background not in BACKGROUNDS:
            raise invalid(f"background must be one of {', '.join(BACKGROUNDS)}")
        scale = body.get("scale", DEFAULT_SCALE)
        if not _is_int(scale) or not 1 <= scale <= MAX_SCALE:
            raise invalid(f"scale must be an integer from 1 to {MAX_SCALE}")
        for flag in ("force", "send_email", "variations"):
            if not isinstance(body.get(flag, False), bool):
                raise invalid(f"{flag} must be true or false")
        if not isinstance(body.get("email", ""), str):
            raise invalid("email must be a string")
        if not batch:
            return cls(prompt, None, 1, background, scale, body.get("force", False))
        mode = body.get("mode", "variations" if body.get("variations") else DEFAULT_MODE)
        if mode not in MODES:
            raise invalid(f"mode must be one of {', '.join(MODES)}")
        count = body.get("count", DEFAULT_BATCH_COUNT)
        if not _is_int(count) or not 1 <= count <= MAX_COUNT:
            raise invalid(f"count must be an integer from 1 to {MAX_COUNT}")
        return cls(prompt, mode, SPRITE_FRAMES.get(mode, count), background, scale, True)

    def params(self) -> dict[str, Any]:
        """The request's settings, as the record of submissions keeps them (ids are not settings)."""
        return {"mode": self.mode, "count": self.count, "background": self.background, "scale": self.scale}


@register
class Qtpixel(ProviderApi):
    name = "qtpixel"

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/generate", self.endpoint("submit", self.generate), methods=["POST"]),
            Route("/api/v1/batch-generate", self.endpoint("submit", self.batch_generate), methods=["POST"]),
            Route("/api/v1/task/{task_id}", self.endpoint("poll", self.get_task), methods=["GET"]),
            Route("/api/v1/task/{task_id}", self.endpoint("status", self.delete_task), methods=["DELETE"]),
            Route("/api/v1/task/{task_id}/download-url", self.endpoint("download", self.download_url), methods=["GET"]),
            Route("/api/v1/tasks", self.endpoint("history", self.list_tasks), methods=["GET"]),
            Route("/api/v1/batch/{batch_id}", self.endpoint("poll_many", self.get_batch), methods=["GET"]),
            Route("/api/v1/batch/{batch_id}/download", self.endpoint("download", self.batch_zip), methods=["GET"]),
            Route("/api/v1/batches", self.endpoint("history", self.list_batches), methods=["GET"]),
            Route("/api/download/{task_id}", self.signed_download, methods=["GET"], name="signed"),
            self.file_route("/static/gallery/{name}"),
        ]

    def error_body(self, code: str, message: str) -> dict[str, Any]:
        return {"error": code, "details": message} if message else {"error": code}

    def missing_key(self) -> ApiError:
        return ApiError(401, UNAUTHORIZED, "missing Authorization: Bearer gpa_... header")

    def invalid_key(self) -> ApiError:
        return ApiError(401, UNAUTHORIZED, "invalid API key")

    def rate_limited(self, retry_after: int) -> ApiError:
        details = f"{self.config.rpm} requests per minute; retry in {retry_after} s"
        return ApiError(429, TOO_MANY_REQUESTS, details, {"Retry-After": str(retry_after)})

    def out_of_credits(self) -> ApiError:
        return ApiError(403, FORBIDDEN, "insufficient credits")

    def not_found(self, what: str) -> ApiError:
        return ApiError(404, NOT_FOUND, f"{what} not found")

    # Starting work

    async def generate(self, request: Request, account: Account) -> Response:
        generation = Generation.parse(await json_object(request), batch=False)
        if not generation.force and (earlier := self._similar_tasks(account, generation.prompt)):
            # Our choice of shape: the seed says only that the answer carries the earlier works.
            return JSONResponse(
                {
                    "status": "duplicates_found",
                    "message": "发现相似作品,如需重新生成请设置 force=true",
                    "duplicates": [self._task_json(task, time.time()) for task in earlier],
                }
            )
        [task_id] = self._start(account, generation, batch_id=None)
        return JSONResponse({"task_id": task_id, "status": "pending"})

    async def batch_generate(self, request: Request, account: Account) -> Response:
        generation = Generation.parse(await json_object(request), batch=True)
        batch_id = 1 + sum(1 for s in self._submissions() if s.id.startswith("b"))
        task_ids = self._start(account, generation, batch_id=batch_id)
        return JSONResponse(
            {"batch_id": batch_id, "task_ids": task_ids, "requested_count": generation.count, "status": "pending"}
        )

    def _start(self, account: Account, generation: Generation, batch_id: int | None) -> list[int]:
        """Charge for and start the generation's tasks, record the submission; the new task ids."""
        if self.upstream_failed(generation.prompt):
            raise ApiError(500, SERVER_ERROR, "upstream image model failed: 503 Service Unavailable")
        self.charge(account, generation.count)
        first = 1 + sum(len(s.task_ids) for s in self._submissions())
        side = self.long_side(GRID * generation.scale)
        task_ids = list(range(first, first + generation.count))
        for index, task_id in enumerate(task_ids, start=1):
            key = f"{TASK_KEY}{task_id}"
            picture = Picture(side, side, picture_seed(key), generation.prompt, generation.background == "transparent")
            params = {**generation.params(), "batch_id": batch_id, "batch_index": index if batch_id else None}
            task = self.world.start_task(key, account, generation.prompt, params, [picture])
            if UNSAFE_TRIGGER in generation.prompt:
                for name in task.files:
                    self.world.files.pop((self.name, name), None)
                task.will_fail, task.files, task.error = True, (), REFUSAL
            elif task.will_fail:
                task.error = GENERATION_FAILED
        submission_id = f"b{batch_id}" if batch_id else f"t{first}"
        self.world.record_submission(
            Submission(
                submission_id, self.name, account.key, generation.prompt, generation.params(),
                tuple(f"{TASK_KEY}{t}" for t in task_ids), time.time(), client_task_ids=tuple(task_ids),
            )
        )  # fmt: skip
        return task_ids

    def _similar_tasks(self, account: Account, prompt: str) -> list[Task]:
        """The key's earlier tasks of the same prompt, ignoring case and spacing, that did not fail."""
        wanted = " ".join(prompt.casefold().split())
        now = time.time()
        return [
            task
            for task in self._tasks(account)
            if " ".join(task.prompt.casefold().split()) == wanted and task.progress(now)[0] is not Phase.FAILED
        ]

    # Single tasks

    async def get_task(self, request: Request, account: Account) -> Response:
        task = self._task(account, request.path_params["task_id"])
        now = time.time()
        self.world.stats.task_polled(task.id, now)
        item = self._task_json(task, now)
        if _flag(request, "include_base64") and item["status"] == "completed":
            item["image_base64"] = await self._data_url(task)
        return JSONResponse(item)

    async def delete_task(self, request: Request, account: Account) -> Response:
        task = self._task(account, request.path_params["task_id"])
        del self.world.tasks[task.id]
        for name in task.files:
            self.world.files.pop((self.name, name), None)
        return JSONResponse({"success": True, "message": "任务已删除"})  # our choice of answer

    async def download_url(self, request: Request, account: Account) -> Response:
        task = self._task(account, request.path_params["task_id"])
        if task.progress(time.time())[0] is not Phase.SUCCEEDED:
            raise invalid("task is not completed")
        task_id = _task_number(task)
        expires = int(time.time()) + LINK_SECONDS
        url = str(request.url_for(f"{self.name}:signed", task_id=str(task_id)))
        return JSONResponse(
            {"download_url": f"{url}?sig={sign(task_id, expires)}&exp={expires}", "expires_in": LINK_SECONDS}
        )

    async def signed_download(self, request: Request) -> Response:
        """The picture behind a signed link: no key, as the seed promises, while the link is valid."""
        now = time.time()
        try:
            response = await self._signed_picture(request, now)
        except ApiError as error:
            response = self.error_response(error)
        self.world.stats.record(now, None, self.name, "download", response.status_code)
        return response

    async def _signed_picture(self, request: Request, now: float) -> Response:
        task_id = _number(request.path_params["task_id"])
        expires = _number(request.query_params.get("exp", ""))
        given = request.query_params.get("sig", "")
        if task_id is None or expires is None or not hmac.compare_digest(given, sign(task_id, expires)):
            raise ApiError(403, FORBIDDEN, "invalid download signature")
        if expires < now:
            raise ApiError(403, FORBIDDEN, "download link expired")
        task = self.world.tasks.get(f"{TASK_KEY}{task_id}")
        stored = self._stored_picture(task, now) if task is not None else None
        if stored is None:
            raise self.not_found("Image")
        return Response(await _pixel_png(stored), media_type="image/png")

    async def list_tasks(self, request: Request, account: Account) -> Response:
        status = request.query_params.get("status")
        if status is not None and status not in STATUS_WORDS.values():
            raise invalid(f"status must be one of {', '.join(STATUS_WORDS.values())}")
        page = _page(request)
        now = time.time()
        items = [self._task_json(task, now) for task in reversed(self._tasks(account))]
        items = [item for item in items if status is None or item["status"] == status]
        shown = items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        limited = await self._add_base64(request, shown)
        return JSONResponse(
            {"tasks": shown, "total": len(items), "page": page, "page_size": PAGE_SIZE, "base64_limited": limited}
        )

    # Batches

    async def get_batch(self, request: Request, account: Account) -> Response:
        batch = self._batch(account, request.path_params["batch_id"])
        now = time.time()
        tasks = [task for key in batch.task_ids if (task := self.world.tasks.get(key)) is not None]
        for task in tasks:
            self.world.stats.task_polled(task.id, now)
        items = [self._task_json(task, now) for task in tasks]
        limited = await self._add_base64(request, items)
        counts = {word: sum(1 for item in items if item["status"] == word) for word in STATUS_WORDS.values()}
        entries = [
            {key: item[key] for key in BATCH_TASK_FIELDS if key in item} | {"batch_index": task.params["batch_index"]}
            for task, item in zip(tasks, items, strict=True)
        ]
        return JSONResponse(
            {
                "batch": self._batch_json(batch, items),
                "tasks": entries,
                "completed_count": counts["completed"],
                "failed_count": counts["failed"],
                "total_count": len(items),
                "base64_limited": limited,
            }
        )

    async def batch_zip(self, request: Request, account: Account) -> Response:
        batch = self._batch(account, request.path_params["batch_id"])
        now = time.time()
        frames: list[tuple[str, StoredFile]] = []
        for key in batch.task_ids:
            task = self.world.tasks.get(key)
            stored = self._stored_picture(task, now) if task is not None else None
            if task is not None and stored is not None:
                frames.append((f"{task.params['mode']}_{task.params['batch_index']}.png", stored))
        if not frames:
            raise self.not_found("Completed images")  # our choice: no empty archive
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as bundle:
            for name, stored in frames:
                bundle.writestr(name, await _pixel_png(stored))
        filename = f"batch_{_number(batch.id[1:])}_{batch.params['mode']}.zip"
        return Response(
            archive.getvalue(),
            media_type="application/zip",
            headers={"Content-Disposition": f"attachment; filename={filename}"},
        )

    async def list_batches(self, request: Request, account: Account) -> Response:
        page = _page(request)
        now = time.time()
        mine = [s for s in reversed(self._submissions()) if s.key == account.key and s.id.startswith("b")]
        shown = []
        for batch in mine[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]:
            items = [self._task_json(t, now) for key in batch.task_ids if (t := self.world.tasks.get(key)) is not None]
            shown.append({**self._batch_json(batch, items), "created_at": _iso(batch.created_at)})
        # Our choice of shape: the seed documents no example of this answer.
        return JSONResponse({"batches": shown, "total": len(mine), "page": page, "page_size": PAGE_SIZE})

    # The world, in qtpixel's words

    def _submissions(self) -> list[Submission]:
        return [s for s in self.world.submissions if s.provider == self.name]

    def _tasks(self, account: Account) -> list[Task]:
        """The key's tasks, oldest first."""
        mine = [t for t in self.world.tasks.values() if t.provider == self.name and t.key == account.key]
        return sorted(mine, key=_task_number)

    def _task(self, account: Account, text: str) -> Task:
        number = _number(text)
        task = self.world.task(account, f"{TASK_KEY}{number}") if number is not None else None
        if task is None:
            raise self.not_found("Task")
        return task

    def _batch(self, account: Account, text: str) -> Submission:
        found = [s for s in self._submissions() if s.id == f"b{_number(text)}" and s.key == account.key]
        if not found:
            raise self.not_found("Batch")
        return found[0]

    def _stored_picture(self, task: Task, now: float) -> StoredFile | None:
        if task.provider != self.name or not task.files:
            return None
        return self.world.file(self.name, task.files[0], now)

    def _task_json(self, task: Task, now: float) -> dict[str, Any]:
        phase, _ = task.progress(now)
        task_id = _task_number(task)
        finished = phase in (Phase.SUCCEEDED, Phase.FAILED)
        return {
            "id": task_id,
            "prompt": task.prompt,
            "status": STATUS_WORDS[phase],
            "image_path": f"/static/gallery/{task_id}.png" if phase is Phase.SUCCEEDED else None,
            "error_msg": task.error if phase is Phase.FAILED else "",
            "batch_id": task.params["batch_id"],
            "created_at": _iso(task.created_at),
            "updated_at": _iso(task.ready_at if finished else task.created_at),
        }

    def _batch_json(self, batch: Submission, items: list[dict[str, Any]]) -> dict[str, Any]:
        words = {item["status"] for item in items}
        if words <= {"completed", "failed"}:
            status = "completed" if "completed" in words else "failed"
        else:
            status = "pending" if words == {"pending"} else "processing"
        return {
            "id": _number(batch.id[1:]),
            "prompt": batch.prompt,
            "mode": batch.params["mode"],
            "status": status,
            "requested_count": batch.params["count"],
            "generated_count": sum(1 for item in items if item["status"] == "completed"),
        }

    async def _add_base64(self, request: Request, items: list[dict[str, Any]]) -> bool:
        """Put the picture inline in the first ``MAX_BASE64`` completed items when asked; True when
        some were left without."""
        if not _flag(request, "include_base64"):
            return False
        completed = [item for item in items if item["status"] == "completed"]
        for item in completed[:MAX_BASE64]:
            item["image_base64"] = await self._data_url(self.world.tasks[f"{TASK_KEY}{item['id']}"])
        return len(completed) > MAX_BASE64

    async def _data_url(self, task: Task) -> str | None:
        stored = self._stored_picture(task, time.time())
        if stored is None:
            return None
        return "data:image/png;base64," + base64.b64encode(await _pixel_png(stored)).decode()

    async def file_response(self, name: str, now: float) -> Response:
        """The gallery's ``/static/gallery/7.png`` is the world's file of task ``qtpixel-7``."""
        stored = self.world.file(self.name, f"{TASK_KEY}{name}", now)
        if stored is None:
            raise self.not_found("File")
        return Response(await _pixel_png(stored), media_type="image/png")


def sign(task_id: int, expires: int) -> str:
    """The ``sig`` of a download link for ``task_id`` valid until ``expires`` (Unix seconds)."""
    return hmac.new(SIGNING_KEY, f"{task_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def pixel_png(picture: Picture) -> bytes:
    """The picture drawn on a ``GRID``-cell grid, then blown up cell by cell: hard-edged pixel art."""
    cells = draw(GRID, GRID, picture.seed, "", picture.transparent)
    return encode(cells.resize((picture.width, picture.height), Image.Resampling.NEAREST), "PNG")


async def _pixel_png(stored: StoredFile) -> bytes:
    if stored.body is None and stored.picture is not None:
        stored.body = await run_in_threadpool(pixel_png, stored.picture)
    assert stored.body is not None
    return stored.body


def _number(text: str) -> int | None:
    """The integer a path or query value spells, or None."""
    return int(text) if text.isascii() and text.isdigit() else None


def _task_number(task: Task) -> int:
    """The provider's integer id of a task (the world knows task 7 as ``qtpixel-7``)."""
    return int(task.id.removeprefix(TASK_KEY))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() == "true"


def _page(request: Request) -> int:
    page = _number(request.query_params.get("page", "1"))
    if page is None or page < 1:
        raise invalid("page must be a positive integer")
    return page


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
