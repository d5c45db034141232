"""GenCraft as its seed (000) documents it: submit, then poll one task or up to 20; uploads; history.

Served under ``/gencraft``, so an account's ``base_url`` is ``http://127.0.0.1:PORT/gencraft``. Errors
read ``{"error": {"type": T, "message": M}}``. Where the seed is silent, the choice made here is marked
"our choice" and is what a client should be ready for anyway.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.api import ApiError, ProviderApi, json_object, register
from sandbox.fetch import FetchRefused, fetch_picture
from sandbox.images import size_for_aspect
from sandbox.state import Account, Phase, Picture, Submission, Task, picture_seed

MODEL_MODES = {
    "gpt-image-2": ("text", "edit"),
    "pro": ("text", "edit"),
    "flash2": ("text", "edit"),
    "flash": ("text", "edit"),
}
"""The seed's model table and the modes each supports: ``fusion`` is documented, yet no model takes it."""
MODEL_MAX_COUNT = dict.fromkeys(MODEL_MODES, 4)
"""The most pictures one submit may ask of each model (the seed says only "capped per model" and
publishes no numbers; 4 for every model is our choice)."""
MODES = ("text", "edit", "fusion")
ASPECTS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")
IMAGE_SIZES = {"1K": 1024, "2K": 2048, "4K": 4096}
"""Pixels on the long side for each ``imageSize``."""
MAX_BATCH_IDS = 20
MAX_HISTORY_LIMIT = 50
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
UPLOAD_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
STATUS_WORDS = {
    Phase.QUEUED: "queued",
    Phase.RUNNING: "in_progress",
    Phase.SUCCEEDED: "completed",
    Phase.FAILED: "failed",
}


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


@dataclass(frozen=True)
class Generation:
    """A validated ``POST /api/v1/generate`` body, defaults filled in."""

    prompt: str
    model: str
    mode: str
    aspect: str
    image_size: str
    count: int
    image_urls: tuple[str, ...]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Generation:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid("prompt is required")
        model = body.get("model", "gpt-image-2")
        if model not in MODEL_MAX_COUNT:
            raise invalid(f"Unknown model: {model}")
        mode = body.get("mode", "text")
        if mode not in MODES:
            raise invalid(f"Unknown mode: {mode}; expected one of {', '.join(MODES)}")
        if mode not in MODEL_MODES[model]:
            raise invalid(f"Model {model} does not support mode {mode}")
        aspect = body.get("aspect", "1:1")
        if aspect not in ASPECTS:
            raise invalid(f"Unsupported aspect: {aspect}; expected one of {', '.join(ASPECTS)}")
        image_size = body.get("imageSize", "2K")
        if image_size not in IMAGE_SIZES:
            raise invalid(f"Unsupported imageSize: {image_size}; expected one of {', '.join(IMAGE_SIZES)}")
        count = body.get("count", 1)
        cap = MODEL_MAX_COUNT[model]
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= cap:
            raise invalid(f"count must be an integer from 1 to {cap} for model {model}")
        image_urls = body.get("imageUrls", [])
        if not isinstance(image_urls, list) or not all(isinstance(u, str) and u for u in image_urls):
            raise invalid("imageUrls must be a list of URLs")
        if mode == "edit" and not image_urls:
            raise invalid("mode edit needs a picture in imageUrls")  # our choice: edit has nothing to edit
        return cls(prompt, model, mode, aspect, image_size, count, tuple(image_urls))

    def params(self) -> dict[str, Any]:
        """Everything but the prompt, in the API's own names (as history lists them)."""
        return {
            "model": self.model,
            "mode": self.mode,
            "aspect": self.aspect,
            "imageSize": self.image_size,
            "count": self.count,
            "imageUrls": list(self.image_urls),
        }


@register
class Gencraft(ProviderApi):
    name = "gencraft"

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/generate", self.endpoint("submit", self.generate), methods=["POST"]),
            Route("/api/v1/tasks", self.endpoint("poll_many", self.get_tasks), methods=["GET"]),
            Route("/api/v1/tasks/{task_id}", self.endpoint("poll", self.get_task), methods=["GET"]),
            Route("/api/v1/upload", self.endpoint("upload", self.upload), methods=["POST"]),
            Route("/api/v1/history", self.endpoint("history", self.history), methods=["GET"]),
            Route("/api/v1/user/status", self.endpoint("status", self.user_status), methods=["GET"]),
            self.file_route(),
        ]

    def error_body(self, code: str, message: str) -> dict[str, Any]:
        return {"error": {"type": code, "message": message}}

    async def generate(self, request: Request, account: Account) -> Response:
        body = await json_object(request)
        if body is None:
            raise invalid("Body must be a JSON object")
        generation = Generation.parse(body)
        if self.upstream_failed(generation.prompt):
            raise ApiError(500, "upstream_error", "Upstream image service failed: 503 Service Unavailable")
        self.charge(account, generation.count)
        now = time.time()
        params = generation.params()
        width, height = size_for_aspect(generation.aspect, self.long_side(IMAGE_SIZES[generation.image_size]))
        task_ids: list[str] = []
        for _ in range(generation.count):
            task_id = f"task_{secrets.token_hex(8)}"
            picture = Picture(width, height, picture_seed(task_id), generation.prompt)
            self.world.start_task(task_id, account, generation.prompt, params, [picture])
            task_ids.append(task_id)
        submission_id = f"tsk_img_{secrets.token_hex(8)}"
        self.world.record_submission(
            Submission(submission_id, self.name, account.key, generation.prompt, params, tuple(task_ids), now)
        )
        return JSONResponse({"task_ids": task_ids, "email": account.email})

    async def get_task(self, request: Request, account: Account) -> Response:
        now = time.time()
        task = self.world.polled_task(account, request.path_params["task_id"], now)
        if task is None:
            raise self.not_found("Task")
        return JSONResponse(self._task_json(request, task, now))

    async def get_tasks(self, request: Request, account: Account) -> Response:
        ids = [i.strip() for i in request.query_params.get("ids", "").split(",") if i.strip()]
        if not ids:
            raise invalid("ids is required: a comma-separated list of task ids")
        if len(ids) > MAX_BATCH_IDS:
            raise invalid(f"At most {MAX_BATCH_IDS} ids per request, got {len(ids)}")
        now = time.time()
        items = []
        for task_id in ids:
            task = self.world.polled_task(account, task_id, now)
            # Our choice, the seed is silent: an unknown id keeps its place as a failed entry.
            items.append(
                {"task_id": task_id, "status": "failed", "progress": 0, "error": "task not found"}
                if task is None
                else self._task_json(request, task, now)
            )
        return JSONResponse({"tasks": items})

    def _task_json(self, request: Request, task: Task, now: float) -> dict[str, Any]:
        phase, progress = task.progress(now)
        item: dict[str, Any] = {"task_id": task.id, "status": STATUS_WORDS[phase], "progress": progress}
        if phase is Phase.SUCCEEDED:
            item["imageUrl"] = self.file_url(request, task.files[0])
        elif phase is Phase.FAILED:
            item["error"] = task.error
        return item

    async def upload(self, request: Request, account: Account) -> Response:
        body = await json_object(request)
        source = body.get("source_url") if body is not None else None
        if not isinstance(source, str) or not source:
            raise invalid("source_url is required")
        try:
            fetched = await fetch_picture(source, MAX_UPLOAD_BYTES)
        except FetchRefused as error:
            raise invalid(str(error)) from error
        name = f"up_{secrets.token_hex(8)}.{UPLOAD_EXTENSIONS[fetched.image_format]}"
        self.world.add_file(self.name, name, fetched.content_type, fetched.body)
        return JSONResponse(
            {
                "url": self.file_url(request, name),
                "filename": fetched.filename,
                "content_type": fetched.content_type,
                "bytes": len(fetched.body),
            }
        )

    async def history(self, request: Request, account: Account) -> Response:
        page = _positive_int(request.query_params.get("page", "1"), "page")
        limit = _positive_int(request.query_params.get("limit", "20"), "limit")
        if limit > MAX_HISTORY_LIMIT:
            raise invalid(f"limit must be at most {MAX_HISTORY_LIMIT}")
        submissions = self.world.history(account)
        now = time.time()
        shown = submissions[(page - 1) * limit : page * limit]
        return JSONResponse(
            {
                "items": [self._history_item(request, s, now) for s in shown],
                "total": len(submissions),
                "page": page,
                "limit": limit,
                "total_pages": math.ceil(len(submissions) / limit),
            }
        )

    def _history_item(self, request: Request, submission: Submission, now: float) -> dict[str, Any]:
        params = submission.params
        tasks = [self.world.tasks[t] for t in submission.task_ids]
        return {
            "id": submission.id,
            "prompt": submission.prompt,
            "model": params["model"],
            "mode": params["mode"],
            "aspect": params["aspect"],
            "imageSize": params["imageSize"],
            "imageCount": params["count"],
            "images": [
                self.file_url(request, name)
                for task in tasks
                if task.progress(now)[0] is Phase.SUCCEEDED
                for name in task.files
            ],
            "refs": list(params["imageUrls"]),
            "createdAt": int(submission.created_at * 1000),
        }

    async def user_status(self, request: Request, account: Account) -> Response:
        return JSONResponse({"email": account.email, "tier": "pro", "has_key": True})


def _positive_int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise invalid(f"{name} must be a positive integer")
    return value
