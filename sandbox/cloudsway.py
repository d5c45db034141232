"""Cloudsway MaaS Flux-1-schnell as its seed (004) documents it: submit, then poll one task at a time.

A deployment is reached at ``{basePath}/{endpointPath}``: the base path ends in ``/v2/ai`` and the
endpoint path is a random string per deployment. Served here under ``/cloudsway``, so an account's
``base_url`` is ``http://127.0.0.1:PORT/cloudsway/v2/ai`` and its ``options.endpoint`` the endpoint path.

- ``POST .../{endpoint}/images/generations`` answers ``{"status": "success", "taskId": UUID}``.
- ``GET .../{endpoint}/images/tasks/{taskId}`` answers ``{"status": "completed", "completed": true,
  "imageUrls": [...]}`` once done, one URL per picture of ``batchsize``.

The seed is silent on everything else; the choices made here are marked "our choice":
- Any endpoint path is served, and a task is found by its key alone, whatever endpoint path the poll
  names: the seed's own poll example names ``lXynAhfbOiD`` for a task its submit example started at
  ``lXynAhfbAiD``.
- Before it is done a task reads ``{"status": "pending"|"running", "completed": false}``; a failed one
  ``{"status": "failed", "completed": true, "imageUrls": [], "error": M}``.
- Errors read ``{"status": "error", "code": C, "message": M}``: 400 ``invalid_parameter``, 401
  ``unauthorized`` / ``invalid_access_key``, 402 ``insufficient_quota``, 404 ``task_not_found``, 429
  ``rate_limited`` (with ``Retry-After``), 500 ``internal_error``.
- Integers may come as JSON numbers or as strings of digits (the seed's example sends ``"batchsize": "2"``).
- ``aspect_ratio`` defaults to ``1:1`` and ``step`` to 4; fields the seed does not name are ignored.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.api import ApiError, ProviderApi, json_object, register
from sandbox.images import size_for_aspect
from sandbox.state import Account, Phase, Picture, Submission, Task, picture_seed

ASPECT_SIZES = {
    "1:1": (1024, 1024),
    "2:3": (512, 768),
    "3:2": (768, 512),
    "3:4": (768, 1024),
    "4:3": (1024, 768),
    "16:9": (1280, 720),
    "9:16": (720, 1280),
}
"""Width and height in pixels of each ``aspect_ratio``, as the seed's table gives them."""
BATCH_SIZES = range(1, 9)
STEPS = range(4, 11)
DEFAULT_ASPECT = "1:1"
DEFAULT_STEP = 4
RUNNING_WORDS = {Phase.QUEUED: "pending", Phase.RUNNING: "running"}
"""Our choice: the seed documents only ``completed``."""


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", message)


def _integer(body: dict[str, Any], field: str, default: int, allowed: range | None = None) -> int:
    """``field`` as an integer, from a JSON number or a string of digits; within ``allowed`` if given."""
    value = body.get(field, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(f"{field} must be an integer")
    if allowed is not None and value not in allowed:
        raise invalid(f"{field} must be from {allowed.start} to {allowed.stop - 1}, got {value}")
    return value


@dataclass(frozen=True)
class Generation:
    """A validated ``images/generations`` body, defaults filled in."""

    prompts: str
    batchsize: int
    aspect_ratio: str
    step: int
    seed: int

    @classmethod
    def parse(cls, body: dict[str, Any] | None) -> Generation:
        if body is None:
            raise invalid("Request body must be a JSON object")
        prompts = body.get("prompts")
        if not isinstance(prompts, str) or not prompts.strip():
            raise invalid("prompts is required")
        aspect_ratio = body.get("aspect_ratio", DEFAULT_ASPECT)
        if aspect_ratio not in ASPECT_SIZES:
            raise invalid(f"aspect_ratio must be one of {', '.join(ASPECT_SIZES)}, got {aspect_ratio!r}")
        return cls(
            prompts,
            _integer(body, "batchsize", 1, BATCH_SIZES),
            aspect_ratio,
            _integer(body, "step", DEFAULT_STEP, STEPS),
            _integer(body, "seed", 0),
        )

    def params(self, endpoint: str) -> dict[str, Any]:
        return {
            "endpoint": endpoint,
            "batchsize": self.batchsize,
            "aspect_ratio": self.aspect_ratio,
            "step": self.step,
            "seed": self.seed,
        }


@register
class Cloudsway(ProviderApi):
    name = "cloudsway"
    base_path = "/v2/ai"
    account_options: ClassVar[dict[str, str]] = {"endpoint": "lXynAhfbAiD"}

    def routes(self) -> list[BaseRoute]:
        deployment = "/v2/ai/{endpoint}/images"
        return [
            Route(f"{deployment}/generations", self.endpoint("submit", self.generate), methods=["POST"]),
            Route(f"{deployment}/tasks/{{task_id}}", self.endpoint("poll", self.get_task), methods=["GET"]),
            self.file_route(),
        ]

    def error_body(self, code: str, message: str) -> dict[str, Any]:
        return {"status": "error", "code": code, "message": message}

    def missing_key(self) -> ApiError:
        return ApiError(401, "unauthorized", "Missing Authorization header: expected 'Bearer <AccessKey>'")

    def invalid_key(self) -> ApiError:
        return ApiError(401, "invalid_access_key", "Invalid AccessKey")

    def out_of_credits(self) -> ApiError:
        return ApiError(402, "insufficient_quota", "Insufficient quota for this deployment")

    def not_found(self, what: str) -> ApiError:
        return ApiError(404, f"{what.lower()}_not_found", f"{what} not found")

    async def generate(self, request: Request, account: Account) -> Response:
        generation = Generation.parse(await json_object(request))
        if self.upstream_failed(generation.prompts):
            raise ApiError(500, "internal_error", "Inference service unavailable, please retry later")
        self.charge(account, generation.batchsize)
        task_id = str(uuid.uuid4())
        width, height = ASPECT_SIZES[generation.aspect_ratio]
        width, height = size_for_aspect(generation.aspect_ratio, self.long_side(max(width, height)))
        pictures = [
            Picture(width, height, picture_seed(self.name, task_id, str(index)), generation.prompts)
            for index in range(generation.batchsize)
        ]
        params = generation.params(request.path_params["endpoint"])
        task = self.world.start_task(task_id, account, generation.prompts, params, pictures)
        self.world.record_submission(
            Submission(task_id, self.name, account.key, generation.prompts, params, (task_id,), task.created_at)
        )
        return JSONResponse({"status": "success", "taskId": task_id})

    async def get_task(self, request: Request, account: Account) -> Response:
        # Our choice: blanks around the id are dropped (the seed's poll example has one inside its URL).
        now = time.time()
        task = self.world.polled_task(account, request.path_params["task_id"].strip(), now)
        if task is None:
            raise self.not_found("Task")
        return JSONResponse(self._task_json(request, task, now))

    def _task_json(self, request: Request, task: Task, now: float) -> dict[str, Any]:
        phase, _ = task.progress(now)
        if phase is Phase.SUCCEEDED:
            urls = [self.file_url(request, name) for name in task.files]
            return {"status": "completed", "completed": True, "imageUrls": urls}
        if phase is Phase.FAILED:
            return {"status": "failed", "completed": True, "imageUrls": [], "error": task.error}
        return {"status": RUNNING_WORDS[phase], "completed": False}
