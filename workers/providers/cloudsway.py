"""Cloudsway MaaS Flux-1-schnell: submit, then poll; one task makes all ``count`` pictures (1 to 8).

A deployment is reached at the account's ``base_url`` (its base path, ending in ``/v2/ai``) followed
by the deployment's endpoint path, the account option ``endpoint``. Only the finished task's answer is
published (``{"status": "completed", "completed": true, "imageUrls": [...]}``), so any other answer is
read as still running unless its status says ``failed``.

Error bodies are not published: outcomes are told apart by HTTP status, the one thing every gateway
in front of the service speaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from jobs.offers import Unsupported
from jobs.offers import cloudsway as offer
from jobs.spec import JobSpec
from workers.providers.base import (
    AnswerLost,
    BadCredentials,
    Finished,
    Image,
    InvalidRequest,
    OutOfCredits,
    Provider,
    ProviderError,
    RateLimited,
    Started,
    StillRunning,
    TaskFailed,
    TaskStatus,
    Transient,
    failed_answer,
    json_body,
    retry_after,
    unreadable,
)


class Cloudsway(Provider):
    name: ClassVar[str] = "cloudsway"

    @classmethod
    def check(cls, spec: JobSpec) -> list[Unsupported]:
        return offer.check(spec)

    def submit(self, spec: JobSpec) -> Started:
        body: dict[str, Any] = {"prompts": spec.prompt, "batchsize": spec.count}
        for field, value in (("aspect_ratio", spec.aspect), ("step", spec.steps), ("seed", spec.seed)):
            if value is not None:
                body[field] = value
        body.update(spec.options)
        response = self._send(self._request("POST", "/images/generations", json=body), paid=True)
        payload = _checked(response, paid=True)
        task_id = payload.get("taskId") if isinstance(payload, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise AnswerLost(f"cloudsway {response.status_code}: a submit answer without a taskId")
        return Started((task_id,))

    def poll(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        [task_id] = task_ids
        response = self._send(self._request("GET", f"/images/tasks/{task_id}"), paid=False)
        if response.status_code == 404:
            return {task_id: TaskFailed(f"cloudsway 404: {_message(json_body(response)) or 'task not found'}")}
        return {task_id: _status(_checked(response, paid=False))}

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        endpoint = self.account.options.get("endpoint", "").strip("/ ")
        if not endpoint:
            raise InvalidRequest(
                f"account {self.account.name}: options.endpoint is not set; cloudsway needs the deployment's"
                " endpoint path (e.g. lXynAhfbAiD) besides its base path in base_url"
            )
        return self.client.build_request(
            method,
            f"{self.account.base_url.rstrip('/')}/{endpoint}{path}",
            headers={"Authorization": f"Bearer {self._api_key}"},
            **kwargs,
        )


def _checked(response: httpx.Response, *, paid: bool) -> Any:
    """The JSON of a successful answer; anything else raised as its outcome.

    A success that cannot be read is ``AnswerLost`` for a ``paid`` call: a task may have been started.
    """
    payload = json_body(response)
    if response.is_success:
        if payload is None:
            raise unreadable(response, "cloudsway", paid=paid)
        return payload
    raise failed_answer(response, "cloudsway", _documented(response, payload), paid=paid)


def _documented(response: httpx.Response, payload: Any) -> ProviderError | None:
    """Cloudsway publishes no error body, only what its statuses mean: a 4xx is the service's refusal
    of the request as sent; a 5xx, or a body that is not JSON, may come from a gateway after the
    service took the job, so it says nothing."""
    if not 400 <= response.status_code < 500 or payload is None:
        return None
    return _error_for(response, f"cloudsway {response.status_code}: {_message(payload) or 'no error message'}")


def _message(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    message = payload.get("message") or payload.get("error")
    return str(message) if message else None


def _error_for(response: httpx.Response, message: str) -> ProviderError:
    status = response.status_code
    if status == 429:
        return RateLimited(message, retry_after(response))
    if status in (401, 403):
        return BadCredentials(message)
    if status == 402:
        return OutOfCredits(message)
    if status in (400, 404, 413, 422):
        return InvalidRequest(message)
    return Transient(message)


def _status(payload: Any) -> TaskStatus:
    status = payload.get("status") if isinstance(payload, dict) else None
    if status == "failed":
        return TaskFailed(f"cloudsway: {_message(payload) or 'the task failed'}")
    if status == "completed":
        urls = payload.get("imageUrls")
        if not isinstance(urls, list) or not urls or not all(isinstance(url, str) and url for url in urls):
            return TaskFailed("cloudsway: completed without imageUrls")
        return Finished(tuple(Image(url) for url in urls))
    return StillRunning()
