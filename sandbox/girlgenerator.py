"""GirlGeneratorAI as its seed (001) documents it: submit a generation, then poll its task.

Served under ``/girlgenerator``, so an account's ``base_url`` is ``http://127.0.0.1:PORT/girlgenerator``.

- ``POST /api/v1/generate`` answers 201 ``{"task_id", "status": "pending", "credits_used",
  "credits_remaining"}``.
- ``GET /api/v1/tasks/{task_id}`` answers ``{"task_id", "status": "pending"|"processing"}``, then
  ``{"task_id", "status": "success", "images": [URL]}`` or ``{"task_id", "status": "failed", "error": M}``.
- Errors read ``{"error": {"code": C, "message": M}}``: 401 ``unauthorized``, 403 ``insufficient_credits``,
  404 ``task_not_found`` (missing, or another key's), 422 ``invalid_params``, 429 ``rate_limit_exceeded``,
  500 ``internal_error``. The seed's limit is 10 requests per minute per key, polls included: the
  ``rpm`` of this provider's config.

Where the seed is silent, the choice made here is marked "our choice":
- A generation costs credits by the model its scene runs on (``credits_for``): text-to-image 1 (the
  seed's example answer), image-to-image with one reference 2, with several 3.
- A key's balance starts at ``config.credits``, or at ``DEFAULT_BALANCE`` when that is unset, so
  ``credits_remaining`` is always a number.
- Pictures are 1024 px on the long side; ``auto`` draws 1:1. One task makes one picture.
- Content refused by the safety filter ends the task failed with the seed's own failed example,
  ``"Generation failed due to content policy."``; the credits are not refunded.
- Fields the seed does not name are ignored, as is ``image_input`` sent with text-to-image. A 429
  carries ``Retry-After`` in seconds.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.api import ApiError, ProviderApi, json_object, register
from sandbox.images import size_for_aspect
from sandbox.state import (
    UNSAFE_TRIGGER,
    Account,
    Phase,
    Picture,
    Submission,
    Task,
    picture_seed,
)

SCENES = ("text-to-image", "image-to-image")
ASPECTS = ("auto", "1:1", "3:2", "2:3", "9:16", "16:9", "3:4", "4:3")
DEFAULT_ASPECT = "auto"
MAX_PROMPT = 2000
"""Characters a prompt may have."""
LONG_SIDE = 1024
"""Pixels on a picture's long side (our choice: the seed names no size)."""
DEFAULT_BALANCE = 12763
"""Credits a key starts with when the config sets none: the seed's example answer, plus its one credit."""
REFUSAL = "Generation failed due to content policy."
"""The seed's failed-task example: what a task refused by the content filter reads."""
GENERATION_FAILED = "Generation failed: the model is overloaded, please try again."  # our choice
STATUS_WORDS = {
    Phase.QUEUED: "pending",
    Phase.RUNNING: "processing",
    Phase.SUCCEEDED: "success",
    Phase.FAILED: "failed",
}


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_params", message)


def credits_for(scene: str, references: int) -> int:
    """Credits one generation costs: the seed says 1 to 3 "by model"; the model follows from the scene."""
    if scene == "text-to-image":
        return 1
    return 2 if references == 1 else 3


@dataclass(frozen=True)
class Generation:
    """A validated ``POST /api/v1/generate`` body, defaults filled in."""

    scene: str
    prompt: str
    aspect_ratio: str
    image_input: tuple[str, ...]

    @classmethod
    def parse(cls, body: dict[str, Any] | None) -> Generation:
        if body is None:
            raise invalid("Request body must be a JSON object")
        scene = body.get("scene")
        if scene not in SCENES:
            raise invalid('scene is required: "text-to-image" or "image-to-image"')
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid("prompt is required")
        if len(prompt) > MAX_PROMPT:
            raise invalid(f"prompt must be at most {MAX_PROMPT} characters, got {len(prompt)}")
        aspect_ratio = body.get("aspect_ratio", DEFAULT_ASPECT)
        if aspect_ratio not in ASPECTS:
            raise invalid(f"aspect_ratio must be one of {', '.join(ASPECTS)}, got {aspect_ratio!r}")
        image_input: tuple[str, ...] = ()
        if scene == "image-to-image":
            urls = body.get("image_input")
            if not isinstance(urls, list) or not urls:
                raise invalid("image_input is required for image-to-image: an array of image URLs")
            if not all(isinstance(url, str) and url.startswith(("http://", "https://")) for url in urls):
                raise invalid("image_input must be an array of http(s) image URLs")
            image_input = tuple(urls)
        return cls(scene, prompt, aspect_ratio, image_input)

    @property
    def credits(self) -> int:
        return credits_for(self.scene, len(self.image_input))

    def params(self) -> dict[str, Any]:
        return {"scene": self.scene, "aspect_ratio": self.aspect_ratio, "image_input": list(self.image_input)}


@register
class Girlgenerator(ProviderApi):
    name = "girlgenerator"

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/generate", self.endpoint("submit", self.generate), methods=["POST"]),
            Route("/api/v1/tasks/{task_id}", self.endpoint("poll", self.get_task), methods=["GET"]),
            self.file_route(),
        ]

    def error_body(self, code: str, message: str) -> dict[str, Any]:
        return {"error": {"code": code, "message": message}}

    def missing_key(self) -> ApiError:
        return ApiError(401, "unauthorized", "Missing API key: send 'Authorization: Bearer YOUR_API_KEY'")

    def invalid_key(self) -> ApiError:
        return ApiError(401, "unauthorized", "Invalid API key")

    def rate_limited(self, retry_after: int) -> ApiError:
        message = f"Too many requests: limit is {self.config.rpm} per minute; retry in {retry_after} s"
        return ApiError(429, "rate_limit_exceeded", message, {"Retry-After": str(retry_after)})

    def not_found(self, what: str) -> ApiError:
        return ApiError(404, f"{what.lower()}_not_found", f"{what} not found")

    def balance(self, account: Account) -> int:
        """Credits the key has left; the config's starting balance, or ``DEFAULT_BALANCE``."""
        start = self.config.credits if self.config.credits is not None else DEFAULT_BALANCE
        return max(0, start - account.spent)

    def charge(self, account: Account, credits: int) -> None:
        left = self.balance(account)
        if left < credits:
            raise ApiError(403, "insufficient_credits", f"Insufficient credits: {credits} needed, {left} left")
        account.spent += credits

    async def generate(self, request: Request, account: Account) -> Response:
        generation = Generation.parse(await json_object(request))
        if self.upstream_failed(generation.prompt):
            raise ApiError(500, "internal_error", "Internal server error, please try again later")
        self.charge(account, generation.credits)
        task_id = secrets.token_hex(8)
        aspect = "1:1" if generation.aspect_ratio == "auto" else generation.aspect_ratio
        width, height = size_for_aspect(aspect, self.long_side(LONG_SIDE))
        picture = Picture(width, height, picture_seed(self.name, task_id), generation.prompt)
        params = generation.params()
        task = self.world.start_task(task_id, account, generation.prompt, params, [picture])
        if UNSAFE_TRIGGER in generation.prompt:
            for name in task.files:
                self.world.files.pop((self.name, name), None)
            task.will_fail, task.files, task.error = True, (), REFUSAL
        elif task.will_fail:
            task.error = GENERATION_FAILED
        self.world.record_submission(
            Submission(task_id, self.name, account.key, generation.prompt, params, (task_id,), task.created_at)
        )
        answer = {
            "task_id": task_id,
            "status": "pending",
            "credits_used": generation.credits,
            "credits_remaining": self.balance(account),
        }
        return JSONResponse(answer, status_code=201)

    async def get_task(self, request: Request, account: Account) -> Response:
        now = time.time()
        task = self.world.polled_task(account, request.path_params["task_id"], now)
        if task is None:
            raise self.not_found("Task")
        return JSONResponse(self._task_json(request, task, now))

    def _task_json(self, request: Request, task: Task, now: float) -> dict[str, Any]:
        phase, _ = task.progress(now)
        item: dict[str, Any] = {"task_id": task.id, "status": STATUS_WORDS[phase]}
        if phase is Phase.SUCCEEDED:
            item["images"] = [self.file_url(request, name) for name in task.files]
        elif phase is Phase.FAILED:
            item["error"] = task.error
        return item
