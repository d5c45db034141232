"""QT Pixel: pixel art, one task by ``/generate`` or a sprite's frames by ``/batch-generate``; poll by id.

A job with ``sprite`` (``walk``, ``idle``, ``attack``, ``directions``, ``variations``, ``random``) is one
batch of that mode; a job without it is one ``/generate`` task, or, for ``count`` > 1, a batch of mode
``random`` (the provider's own default: several pictures of the prompt, no added instruction).

A batch's tasks are known as ``b<batch>:<task>`` (``b17:123``), so they share a ``poll_group`` and one
``GET /api/v1/batch/17`` answers them all; a single task is ``123`` and is polled on its own.

Every ``/generate`` sends ``force: true``: without it a prompt like an earlier one of the key answers
``duplicates_found`` and starts nothing, which a queue that was asked to generate must not take as
done. Should that answer come anyway (``options: {force: false}``), it is an ``InvalidRequest``: no
task was started, and the same request would find the same duplicates. ``send_email`` is false unless
the options say otherwise, so a batch of a thousand does not send a thousand mails.

A finished picture is the task's ``image_path`` (``/static/gallery/123.png``) appended to the account's
``base_url``, which keeps any path prefix the base has; it is fetched without a key. The signed
download link would cost a request per picture and expires in an hour.

Errors read ``{"error": M, "details": D}``. The seed names 400, 401, 403, 404 and 500 but no out-of-
credits answer; 403 ("no permission") is the only one a valid key with a valid request can get, so it
is taken as ``OutOfCredits``: the account cannot do this now, and should pause.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from jobs.offers import Unsupported
from jobs.offers import qtpixel as offer
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

MANY_MODE = "random"
"""The batch mode of a job of several pictures that names no sprite."""
REFUSAL = "⚠️ 生成失败: AI 拒绝处理此请求 (可能包含敏感内容)"
"""The seed's content-safety refusal, exactly as a failed task's ``error_msg`` reads."""
BATCH_PREFIX = "b"
SERVER_ERROR = "服务器错误 - 内部错误"
"""The seed's words for its 500: the one server error that says the service itself failed."""
SEARCH_PAGES = 10
"""Pages of the task or batch list a search for a lost submit reads at most (20 items a page)."""


class Qtpixel(Provider):
    name: ClassVar[str] = "qtpixel"
    batch_poll_size: ClassVar[int] = offer.MAX_COUNT
    """A whole batch (at most 4 tasks) is one request."""
    polls_count_against_limit: ClassVar[bool] = True
    """The limit is not published; counting polls is the safe side, and a sprite polls once for all frames."""
    keeps_record: ClassVar[bool] = True

    @classmethod
    def check(cls, spec: JobSpec) -> list[Unsupported]:
        return offer.check(spec)

    @classmethod
    def cost(cls, spec: JobSpec) -> Cost:
        """A sprite mode sets its own frame count; each frame is a task and a picture."""
        frames = offer.SPRITE_FRAMES.get(spec.sprite or "", spec.count)
        return Cost(tasks=frames, pictures=frames, credits=frames)

    @classmethod
    def poll_group(cls, task_id: str) -> str:
        batch, _, _ = task_id.rpartition(":")
        return batch or task_id

    def submit(self, spec: JobSpec) -> Started:
        body: dict[str, Any] = {"prompt": spec.prompt, "send_email": False}
        if spec.background is not None:
            body["background"] = spec.background
        if spec.sprite is None and spec.count == 1:
            body["force"] = True
            return self._single(body | spec.options)
        mode = spec.sprite or MANY_MODE
        body |= {"mode": mode, "count": offer.SPRITE_FRAMES.get(mode, spec.count)}
        return self._batch(body | spec.options)

    def _single(self, body: dict[str, Any]) -> Started:
        response = self._send(self._request("POST", "/api/v1/generate", json=body), paid=True)
        payload = self._check(response, paid=True)
        if isinstance(payload, dict) and payload.get("status") == "duplicates_found":
            raise InvalidRequest("qtpixel: found similar earlier works and started nothing; send force: true")
        task_id = payload.get("task_id") if isinstance(payload, dict) else None
        if not _is_id(task_id):
            raise AnswerLost(f"qtpixel {response.status_code}: a generate answer without a task_id")
        return Started((str(task_id),))

    def _batch(self, body: dict[str, Any]) -> Started:
        response = self._send(self._request("POST", "/api/v1/batch-generate", json=body), paid=True)
        payload = self._check(response, paid=True)
        batch_id = payload.get("batch_id") if isinstance(payload, dict) else None
        task_ids = payload.get("task_ids") if isinstance(payload, dict) else None
        if not _is_id(batch_id) or not isinstance(task_ids, list) or not task_ids or not all(map(_is_id, task_ids)):
            raise AnswerLost(f"qtpixel {response.status_code}: a batch-generate answer without its ids")
        return Started(tuple(f"{BATCH_PREFIX}{batch_id}:{task_id}" for task_id in task_ids))

    def delete(self, task_id: str) -> bool:
        """``DELETE /api/v1/task/:id``, the one delete qtpixel documents (a sprite batch's frames are
        deleted one by one; it has none for a batch). A task already gone is deleted all the same."""
        remote = task_id.rpartition(":")[2]
        response = self._send(self._request("DELETE", f"/api/v1/task/{remote}"), paid=False)
        if response.status_code == 404 and _documented(response) is not None:
            return True
        self._check(response, paid=False)
        return True

    def find_submissions(self, spec: JobSpec, since: datetime, until: datetime) -> list[Sighting]:
        """A single task from the task list, a batch from the batch list (then its tasks by one more
        request), newest first, read back to ``since``; matched by prompt (and mode and count)."""
        if spec.sprite is None and spec.count == 1:
            items = self._listed("/api/v1/tasks", "tasks", since)
            return [
                Sighting(str(item["id"]), task_ids=(str(item["id"]),))
                for item in items
                if item.get("prompt") == spec.prompt and item.get("batch_id") is None and _within(item, since, until)
            ][::-1]
        mode = spec.sprite or MANY_MODE
        count = offer.SPRITE_FRAMES.get(mode, spec.count)
        batches = [
            item
            for item in self._listed("/api/v1/batches", "batches", since)
            if item.get("prompt") == spec.prompt
            and item.get("mode") == mode
            and item.get("requested_count") == count
            and _within(item, since, until)
        ]
        found = []
        for batch in batches[::-1]:
            response = self._send(self._request("GET", f"/api/v1/batch/{batch['id']}"), paid=False)
            tasks = self._check(response, paid=False).get("tasks")
            if not isinstance(tasks, list):
                raise Unreadable("qtpixel: a batch answer without its tasks")
            ordered = sorted((t for t in tasks if isinstance(t, dict)), key=lambda t: t.get("batch_index") or 0)
            task_ids = tuple(f"{BATCH_PREFIX}{batch['id']}:{task['id']}" for task in ordered)
            found.append(Sighting(f"{BATCH_PREFIX}{batch['id']}", task_ids=task_ids))
        return found

    def _listed(self, path: str, key: str, since: datetime) -> list[dict[str, Any]]:
        """Items of a paged list, newest first, until one older than ``since`` or ``SEARCH_PAGES``."""
        items: list[dict[str, Any]] = []
        for page in range(1, SEARCH_PAGES + 1):
            response = self._send(self._request("GET", path, params={"page": page}), paid=False)
            listed = self._check(response, paid=False).get(key)
            if not isinstance(listed, list):
                raise Unreadable(f"qtpixel: a {path} answer without its {key}")
            items += [item for item in listed if isinstance(item, dict) and _is_id(item.get("id"))]
            created = _created(listed[-1]) if listed and isinstance(listed[-1], dict) else None
            if not listed or created is None or created < since:
                break
        return items

    def poll(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        """One request per poll group: a batch's tasks together, a single task on its own."""
        groups: dict[str, list[str]] = {}
        for task_id in task_ids:
            groups.setdefault(self.poll_group(task_id), []).append(task_id)
        found: dict[str, TaskStatus] = {}
        for group, ids in groups.items():
            found.update(self._poll_batch(group, ids) if group != ids[0] else {group: self._poll_single(group)})
        return {task_id: found[task_id] for task_id in task_ids}

    def _poll_single(self, task_id: str) -> TaskStatus:
        response = self._send(self._request("GET", f"/api/v1/task/{task_id}"), paid=False)
        if response.status_code == 404 and _documented(response) is not None:
            return TaskFailed(f"qtpixel: task {task_id} is gone (deleted, or another key's)")
        return self._status(self._check(response, paid=False))

    def _poll_batch(self, group: str, task_ids: list[str]) -> dict[str, TaskStatus]:
        batch_id = group.removeprefix(BATCH_PREFIX)
        response = self._send(self._request("GET", f"/api/v1/batch/{batch_id}"), paid=False)
        if response.status_code == 404 and _documented(response) is not None:
            return {task_id: TaskFailed(f"qtpixel: batch {batch_id} is gone") for task_id in task_ids}
        payload = self._check(response, paid=False)
        items = payload.get("tasks") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise Unreadable("qtpixel: a batch answer without its tasks")
        by_id = {str(item.get("id")): item for item in items if isinstance(item, dict)}
        found: dict[str, TaskStatus] = {}
        for task_id in task_ids:
            remote = task_id.partition(":")[2]
            item = by_id.get(remote)
            found[task_id] = (
                self._status(item)
                if item is not None
                else TaskFailed(f"qtpixel: task {remote} is no longer in batch {batch_id}")
            )
        return found

    def _status(self, item: Any) -> TaskStatus:
        if not isinstance(item, dict):
            return TaskFailed("qtpixel: a task entry that cannot be read")
        status = item.get("status")
        if status == "completed":
            path = item.get("image_path")
            if not isinstance(path, str) or not path:
                return TaskFailed("qtpixel: completed without an image_path")
            return Finished((Image(self._absolute(path)),))
        if status == "failed":
            reason = str(item.get("error_msg") or "failed")
            return TaskFailed(reason, refused=reason.strip() == REFUSAL)
        return StillRunning()

    def _absolute(self, path: str) -> str:
        """``image_path`` below the base: appended, since a URL join would drop the base's own path."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.account.base_url.rstrip('/')}/{path.lstrip('/')}"

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        return self.client.build_request(
            method,
            f"{self.account.base_url.rstrip('/')}{path}",
            headers={"Authorization": f"Bearer {self._api_key}"},
            **kwargs,
        )

    def _check(self, response: httpx.Response, *, paid: bool) -> Any:
        payload = json_body(response)
        if response.is_success:
            if not isinstance(payload, dict):
                raise unreadable(response, self.name, paid=paid)
            return payload
        raise failed_answer(response, self.name, _documented(response), paid=paid)


def _documented(response: httpx.Response) -> ProviderError | None:
    """The outcome of an error body in the documented shape, ``{"error": M, "details": D?}``."""
    payload = json_body(response)
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), str):
        return None
    details = payload.get("details")
    message = f"qtpixel {response.status_code}: {payload['error']}" + (f" ({details})" if details else "")
    if response.status_code >= 500 and payload["error"] != SERVER_ERROR:
        # A server error the seed does not word: a proxy's ``{"error": ...}`` as likely as the service's.
        return AnswerLost(f"{message}; the request may have been taken")
    return _error_for(response, message)


def _error_for(response: httpx.Response, message: str) -> ProviderError:
    status = response.status_code
    if status == 429:
        return RateLimited(message, retry_after(response))
    if status == 401:
        return BadCredentials(message)
    if status in (402, 403):
        return OutOfCredits(message)
    if 400 <= status < 500:
        return InvalidRequest(message)
    return Transient(message)


def _created(item: dict[str, Any]) -> datetime | None:
    """``created_at`` (ISO 8601, UTC, to the second) as an aware datetime, or None."""
    text = item.get("created_at")
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _within(item: dict[str, Any], since: datetime, until: datetime) -> bool:
    created = _created(item)
    # The provider's time is to the second: a submit in the second ``since`` falls in counts.
    return created is not None and since - timedelta(seconds=1) <= created <= until


def _is_id(value: Any) -> bool:
    """Ids are integers; a string of digits is taken too, should the provider ever quote them."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit())
