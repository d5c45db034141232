"""TaleCraft AI as its seed (002) documents it: one synchronous call that answers with the picture.

``POST /api/v1/generate`` holds the answer until the picture is drawn (the configured latency), then
answers ``{"code": 0, "message": "ok", "data": {"id", "status": "success", "image_url"}}``. Every error
reads ``{"code": -1, "message": M}`` with one of the seed's messages. Served under ``/talecraft``, so an
account's ``base_url`` is ``http://127.0.0.1:PORT/talecraft`` (the real one is ``https://talescaleai.com``).

The seed gives no HTTP statuses and no picture sizes; the choices made here are marked "our choice".
A client must read the message, not the status.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.api import ApiError, ProviderApi, json_object, register
from sandbox.images import draw, encode, size_for_aspect
from sandbox.state import UPSTREAM_ERROR_TRIGGER, Account, Submission, picture_seed

STYLES = ("children_book",)
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9")
LONG_SIDE = 1024
"""Pixels on a picture's long side (our choice: the seed names no size)."""

# The seed's error messages; it truncates the first one, the rest of it is our wording.
MISSING_KEY = "API key is required. Pass it in the X-API-Key header"
INVALID_KEY = "Invalid API key"
PROMPT_REQUIRED = "prompt is required"
UNSUPPORTED_STYLE = "Unsupported style"
UNSUPPORTED_ASPECT = "Unsupported aspect_ratio"
INSUFFICIENT_CREDITS = "insufficient credits"
GENERATION_FAILED = "Generation failed"


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)  # our choice of status


@dataclass(frozen=True)
class Generation:
    """A validated request body, defaults filled in."""

    prompt: str
    style: str
    aspect_ratio: str

    @classmethod
    def parse(cls, body: dict[str, Any] | None) -> Generation:
        # A body that is not a JSON object carries no prompt: the same refusal as an empty one.
        body = body or {}
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid(PROMPT_REQUIRED)
        style = body.get("style", STYLES[0])
        if style not in STYLES:
            raise invalid(UNSUPPORTED_STYLE)
        aspect_ratio = body.get("aspect_ratio", "1:1")
        if aspect_ratio not in ASPECT_RATIOS:
            raise invalid(UNSUPPORTED_ASPECT)
        return cls(prompt, style, aspect_ratio)


@register
class Talecraft(ProviderApi):
    name = "talecraft"

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/generate", self.endpoint("submit", self.generate), methods=["POST"]),
            self.file_route("/uploads/illustrations/{name}"),
        ]

    def error_body(self, code: str, message: str) -> dict[str, Any]:
        return {"code": -1, "message": message}

    def credential(self, request: Request) -> str:
        key = request.headers.get("x-api-key", "").strip()
        if not key:
            raise self.missing_key()
        return key

    def missing_key(self) -> ApiError:
        return ApiError(401, "unauthorized", MISSING_KEY)

    def invalid_key(self) -> ApiError:
        return ApiError(401, "invalid_api_key", INVALID_KEY)

    def out_of_credits(self) -> ApiError:
        return ApiError(402, "insufficient_credits", INSUFFICIENT_CREDITS)

    async def generate(self, request: Request, account: Account) -> Response:
        # The seed requires the JSON content type; a body sent otherwise is not read (our choice).
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        generation = Generation.parse(await json_object(request) if content_type == "application/json" else None)
        if UPSTREAM_ERROR_TRIGGER in generation.prompt:
            # The seed documents no server error of its own; a plain 500 is our choice.
            raise ApiError(500, "internal_error", "Internal server error")
        if self.world.server_error(self.name):
            # At ``error_rate`` the seed's own words for a failure a retry can cure, in the status a
            # failed generation gets here: what a client classifying by message must expect.
            raise ApiError(500, "generation_failed", GENERATION_FAILED)
        self.charge(account, 1)
        task_id = str(uuid.uuid4())
        params = {"style": generation.style, "aspect_ratio": generation.aspect_ratio}
        # No pictures handed to the world: it would serve them as PNG, and TaleCraft's links are JPEG.
        task = self.world.start_task(task_id, account, generation.prompt, params, [])
        self.world.record_submission(
            Submission(task_id, self.name, account.key, generation.prompt, params, (task_id,), task.created_at)
        )
        await self._hold_back(task.ready_at - time.time())
        if task.will_fail:
            account.spent -= 1  # our choice: a failed generation is not billed
            raise ApiError(500, "generation_failed", GENERATION_FAILED)  # our choice of status
        name = f"{task_id}.jpeg"
        width, height = size_for_aspect(generation.aspect_ratio, self.long_side(LONG_SIDE))
        seed = picture_seed(self.name, task_id)
        body = await run_in_threadpool(lambda: encode(draw(width, height, seed, generation.prompt), "JPEG"))
        self.world.add_file(self.name, name, "image/jpeg", body)
        data = {"id": task_id, "status": "success", "image_url": self.file_url(request, name)}
        return JSONResponse({"code": 0, "message": "ok", "data": data})
