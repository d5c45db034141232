"""GirlGeneratorAI: submit one generation, then poll its task, one task a request.

The key may send 10 requests a minute, polls included, so polls are counted against the account's
``rpm`` (the seed's own example, polling every 5 s, would be refused on its own). A generation costs
1 to 3 credits by the model behind its scene; a submit's answer says what it charged (``credits_used``)
and what the key has left. Errors come as ``{"error": {"code": C, "message": M}}``;
a task refused by the content filter ends ``failed`` with an error naming the content policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from jobs.offers import Unsupported
from jobs.offers import girlgenerator as offer
from jobs.spec import JobSpec
from workers.providers.base import (
    AnswerLost,
    BadCredentials,
    Cost,
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

REFUSAL_WORDS = "content policy"
"""What a task refused by the content filter says in its ``error`` (the seed's failed example)."""


class Girlgenerator(Provider):
    name: ClassVar[str] = "girlgenerator"
    batch_poll_size: ClassVar[int] = 1
    polls_count_against_limit: ClassVar[bool] = True

    @classmethod
    def check(cls, spec: JobSpec) -> list[Unsupported]:
        return offer.check(spec)

    @classmethod
    def cost(cls, spec: JobSpec) -> Cost:
        """Text-to-image costs 1 credit, image-to-image 2 with one reference and 3 with several."""
        if offer.scene_of(spec) == offer.IMAGE:
            return Cost(credits=2 if len(spec.references) == 1 else 3)
        return Cost(credits=1)

    def submit(self, spec: JobSpec) -> Started:
        body: dict[str, Any] = {"scene": offer.scene_of(spec), "prompt": spec.prompt}
        if spec.aspect is not None:
            body["aspect_ratio"] = spec.aspect
        if spec.references:
            body["image_input"] = list(spec.references)
        body.update(spec.options)
        response = self._send(self._request("POST", "/api/v1/generate", json=body), paid=True)
        payload = _checked(response, paid=True)
        task_id = payload.get("task_id") if isinstance(payload, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise AnswerLost(f"girlgenerator {response.status_code}: a submit answer without a task_id")
        remaining = _number(payload.get("credits_remaining"))
        used = _number(payload.get("credits_used"))
        charged = math.ceil(used) if used is not None and used >= 0 else None
        return Started((task_id,), credits_remaining=remaining, credits_used=charged)

    def poll(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        [task_id] = task_ids
        response = self._send(self._request("GET", f"/api/v1/tasks/{task_id}"), paid=False)
        if response.status_code == 404 and _documented(response) is not None:
            # Missing, or another key's: polling again will never find it.
            return {task_id: TaskFailed(_message(response, json_body(response)))}
        return {task_id: _status(_checked(response, paid=False))}

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        return self.client.build_request(
            method,
            f"{self.account.base_url.rstrip('/')}{path}",
            headers={"Authorization": f"Bearer {self._api_key}"},
            **kwargs,
        )


def _number(value: Any) -> float | None:
    """A number of the answer's, or None for anything else (a bool is not a count of credits)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _checked(response: httpx.Response, *, paid: bool) -> Any:
    """The JSON of a successful answer; anything else raised as its outcome.

    A success that cannot be read is ``AnswerLost`` for a ``paid`` call: a task may have been started.
    """
    payload = json_body(response)
    if response.is_success:
        if not isinstance(payload, dict):
            raise unreadable(response, "girlgenerator", paid=paid)
        return payload
    raise failed_answer(response, "girlgenerator", _documented(response), paid=paid)


def _documented(response: httpx.Response) -> ProviderError | None:
    """The outcome of an error body in the documented shape, ``{"error": {"code", "message"}}``."""
    payload = json_body(response)
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return None
    return _error_for(response, _code(payload), _message(response, payload))


def _code(payload: Any) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    return str(error.get("code", "")) if isinstance(error, dict) else ""


def _message(response: httpx.Response, payload: Any) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    words = str(error.get("message", "")) if isinstance(error, dict) else "no error body"
    return f"girlgenerator {response.status_code} {_code(payload) or 'error'}: {words}"


def _error_for(response: httpx.Response, code: str, message: str) -> ProviderError:
    status = response.status_code
    if status == 429 or code == "rate_limit_exceeded":
        return RateLimited(message, retry_after(response))
    if status == 401 or code == "unauthorized":
        return BadCredentials(message)
    if status == 403 or code == "insufficient_credits":
        return OutOfCredits(message)
    if status in (400, 404, 413, 422):
        return InvalidRequest(message)
    return Transient(message)


def _status(payload: dict[str, Any]) -> TaskStatus:
    status = payload.get("status")
    if status == "success":
        images = payload.get("images")
        if not isinstance(images, list) or not images or not all(isinstance(url, str) and url for url in images):
            return TaskFailed("girlgenerator: success without images")
        return Finished(tuple(Image(url) for url in images))
    if status == "failed":
        reason = str(payload.get("error") or "the task failed")
        return TaskFailed(f"girlgenerator: {reason}", refused=REFUSAL_WORDS in reason.casefold())
    return StillRunning()
