"""GenCraft: submit, then poll; one submit with ``count`` > 1 starts several tasks; batch polls of 20.

What it takes (models and their modes, aspects, sizes, the count per model) is its offer,
``jobs.offers.gencraft``, which ``check`` answers with.

Reference pictures (``references``, URLs) go through ``POST /api/v1/upload`` first, as the seed asks:
the service fetches each and returns a stable URL for ``imageUrls``. A job with references and no
``mode`` is sent as ``edit``, the only mode that uses them.

``history`` and ``user_status`` are the read-only endpoints: history lists the account's submits
newest first, which is how to learn afterwards whether a submit whose answer was lost went through.

Errors come as ``{"error": {"type": T, "message": M}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import httpx

from jobs.offers import Unsupported
from jobs.offers import gencraft as offer
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
    Sighting,
    Started,
    StillRunning,
    TaskFailed,
    TaskStatus,
    Transient,
    Unreadable,
    failed_answer,
    json_body,
    retry_after,
    unreadable,
)

NOTHING_STARTED = "upstream_error"
"""The one documented server error: the upstream model failed, no task was started."""
HISTORY_PAGE = 50
"""History entries a page (the most the API gives)."""
SEARCH_PAGES = 10
"""Pages of history a search for a lost submit reads at most: the last 500 submits of the key."""


@dataclass(frozen=True)
class HistoryItem:
    """One past submit of the account, as ``GET /api/v1/history`` lists it."""

    id: str
    prompt: str
    model: str
    mode: str
    aspect: str
    image_size: str
    image_count: int
    images: tuple[str, ...]
    """URLs of the pictures finished so far."""
    refs: tuple[str, ...]
    """The reference picture URLs it was sent with."""
    created_at: float
    """Unix seconds (the API sends milliseconds)."""


@dataclass(frozen=True)
class HistoryPage:
    items: tuple[HistoryItem, ...]
    """Newest first."""
    total: int
    page: int
    limit: int
    total_pages: int


@dataclass(frozen=True)
class AccountStatus:
    email: str
    tier: str
    """``trial``, ``starter``, ``standard`` or ``pro``."""
    has_key: bool
    """Whether the account's upstream key is configured; without it, generations fail."""


class Gencraft(Provider):
    name: ClassVar[str] = "gencraft"
    batch_poll_size: ClassVar[int] = 20
    keeps_record: ClassVar[bool] = True

    @classmethod
    def check(cls, spec: JobSpec) -> list[Unsupported]:
        return offer.check(spec)

    @classmethod
    def cost(cls, spec: JobSpec) -> Cost:
        """One task a picture; each reference is one more (unpaid) request, its upload."""
        return Cost(requests=1 + len(spec.references), tasks=spec.count, pictures=spec.count, credits=spec.count)

    def submit(self, spec: JobSpec) -> Started:
        body = _body(spec)
        if spec.references:
            body["imageUrls"] = [self.upload(url) for url in spec.references]
        body.update(spec.options)
        response = self._send(self._request("POST", "/api/v1/generate", json=body), paid=True)
        payload = self._check(response, paid=True)
        task_ids = payload.get("task_ids") if isinstance(payload, dict) else None
        if not isinstance(task_ids, list) or not task_ids or not all(isinstance(t, str) for t in task_ids):
            raise self._unreadable(response, paid=True)
        return Started(tuple(task_ids))

    def upload(self, source_url: str) -> str:
        """The stable URL GenCraft gives a reference picture it fetched from ``source_url``.

        Not a generation, so nothing is paid for: a lost answer is only ``Transient``.
        """
        request = self._request("POST", "/api/v1/upload", json={"source_url": source_url})
        response = self._send(request, paid=False)
        payload = self._check(response, paid=False)
        url = payload.get("url") if isinstance(payload, dict) else None
        if not isinstance(url, str) or not url:
            raise self._unreadable(response, paid=False)
        return url

    def poll(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        if len(task_ids) == 1:
            response = self._send(self._request("GET", f"/api/v1/tasks/{task_ids[0]}"), paid=False)
            if response.status_code == 404 and self._documented(response) is not None:
                return {task_ids[0]: TaskFailed(f"gencraft: task {task_ids[0]} is not found at the provider")}
            items: Any = [self._check(response, paid=False)]
        else:
            request = self._request("GET", "/api/v1/tasks", params={"ids": ",".join(task_ids)})
            response = self._send(request, paid=False)
            refused = response.status_code in (400, 404) and isinstance(self._documented(response), InvalidRequest)
            if refused and len(task_ids) <= self.batch_poll_size:
                # The seed does not say how a batch poll answers an id it does not know: asked one by
                # one, a dropped task fails on its own instead of taking the other jobs' with it.
                return {task_id: status for task_id in task_ids for status in self.poll([task_id]).values()}
            payload = self._check(response, paid=False)
            items = payload.get("tasks") if isinstance(payload, dict) else None
        if not isinstance(items, list) or len(items) != len(task_ids) or not all(isinstance(i, dict) for i in items):
            raise Unreadable("gencraft: a poll answer that does not list the tasks asked for")
        return {task_id: _status(item) for task_id, item in zip(task_ids, items, strict=True)}

    def find_submissions(self, spec: JobSpec, since: datetime, until: datetime) -> list[Sighting]:
        """The account's history, newest first, read back to ``since``: entries of the same prompt and
        settings. History names no task ids, only the pictures finished so far."""
        wanted = _fingerprint(_body(spec) | spec.options)
        found: list[Sighting] = []
        for page in range(1, SEARCH_PAGES + 1):
            history = self.history(page=page, limit=HISTORY_PAGE)
            for item in history.items:
                if since.timestamp() <= item.created_at <= until.timestamp() and _fingerprint_of(item) == wanted:
                    images = tuple(Image(url) for url in item.images)
                    complete = len(images) >= item.image_count
                    found.append(Sighting(item.id, images=images, complete=complete, expected=item.image_count))
            oldest = history.items[-1].created_at if history.items else 0.0
            if page >= history.total_pages or oldest < since.timestamp():
                break
        return found[::-1]

    def history(self, page: int = 1, limit: int = 20) -> HistoryPage:
        """One page (1-indexed, ``limit`` at most 50) of the account's submits, newest first."""
        request = self._request("GET", "/api/v1/history", params={"page": page, "limit": limit})
        response = self._send(request, paid=False)
        payload = self._check(response, paid=False)
        try:
            return HistoryPage(
                items=tuple(_history_item(item) for item in payload["items"]),
                total=_int(payload["total"]),
                page=_int(payload["page"]),
                limit=_int(payload["limit"]),
                total_pages=_int(payload["total_pages"]),
            )
        except (KeyError, TypeError, ValueError):
            raise self._unreadable(response, paid=False) from None

    def user_status(self) -> AccountStatus:
        """The account's email, tier, and whether its upstream key is set."""
        response = self._send(self._request("GET", "/api/v1/user/status"), paid=False)
        payload = self._check(response, paid=False)
        try:
            return AccountStatus(_str(payload["email"]), _str(payload["tier"]), _bool(payload["has_key"]))
        except (KeyError, TypeError, ValueError):
            raise self._unreadable(response, paid=False) from None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        return self.client.build_request(
            method,
            f"{self.account.base_url.rstrip('/')}{path}",
            headers={"Authorization": f"Bearer {self._api_key}"},
            **kwargs,
        )

    def _check(self, response: httpx.Response, *, paid: bool) -> Any:
        """The JSON of a success (a success that is not JSON is ``_unreadable``); else the outcome."""
        if response.is_success:
            payload = json_body(response)
            if payload is None:
                raise self._unreadable(response, paid=paid)
            return payload
        raise failed_answer(response, self.name, self._documented(response), paid=paid)

    def _documented(self, response: httpx.Response) -> ProviderError | None:
        """The outcome of an error body in GenCraft's shape, ``{"error": {"type", "message"}}``."""
        payload = json_body(response)
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict) or not isinstance(error.get("type"), str):
            return None
        kind = error["type"]
        return _error_for(response, kind, f"gencraft {response.status_code} {kind}: {error.get('message', '')}")

    def _unreadable(self, response: httpx.Response, *, paid: bool) -> ProviderError:
        return unreadable(response, self.name, paid=paid)


def _body(spec: JobSpec) -> dict[str, Any]:
    """The generate request's JSON, but for ``imageUrls`` (uploaded first) and the options."""
    body: dict[str, Any] = {"prompt": spec.prompt, "count": spec.count}
    for field, value in (
        ("model", spec.model),
        ("mode", spec.mode or ("edit" if spec.references else None)),
        ("aspect", spec.aspect),
        ("imageSize", spec.size),
    ):
        if value is not None:
            body[field] = value
    return body


def _fingerprint(body: dict[str, Any]) -> tuple[Any, ...]:
    """What history shows of a request, the documented defaults filled in."""
    return (
        body.get("prompt"),
        body.get("model", offer.DEFAULT_MODEL),
        body.get("mode", "text"),
        body.get("aspect", "1:1"),
        body.get("imageSize", "2K"),
        body.get("count", 1),
    )


def _fingerprint_of(item: HistoryItem) -> tuple[Any, ...]:
    return (item.prompt, item.model, item.mode, item.aspect, item.image_size, item.image_count)


def _error_for(response: httpx.Response, kind: str, message: str) -> ProviderError:
    status = response.status_code
    if status == 429:
        return RateLimited(message, retry_after(response))
    if status == 401 or kind in ("unauthorized", "invalid_api_key"):
        return BadCredentials(message)
    if status == 402 or kind in ("insufficient_credits", "quota_exceeded"):
        return OutOfCredits(message)
    if status in (400, 404, 422):
        return InvalidRequest(message)
    if kind == NOTHING_STARTED:
        return Transient(message)
    # An error the seed does not name: whether the job was taken is unknown.
    return AnswerLost(f"{message}; the request may have been taken")


def _status(item: dict[str, Any]) -> TaskStatus:
    status = item.get("status")
    if status == "completed":
        url = item.get("imageUrl")
        if not isinstance(url, str) or not url:
            return TaskFailed("gencraft: completed without an imageUrl")
        return Finished((Image(url),))
    if status == "failed":
        return TaskFailed(str(item.get("error") or "failed"))
    progress = item.get("progress")
    return StillRunning(progress if isinstance(progress, int) else None)


def _history_item(item: Any) -> HistoryItem:
    """Raises ``KeyError``, ``TypeError`` or ``ValueError`` when the item is not as documented."""
    return HistoryItem(
        id=_str(item["id"]),
        prompt=_str(item["prompt"]),
        model=_str(item["model"]),
        mode=_str(item["mode"]),
        aspect=_str(item["aspect"]),
        image_size=_str(item["imageSize"]),
        image_count=_int(item["imageCount"]),
        images=tuple(_str(url) for url in item["images"]),
        refs=tuple(_str(url) for url in item["refs"]),
        created_at=_int(item["createdAt"]) / 1000,
    )


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value
