"""TaleCraft AI: one synchronous call; the answer comes when the picture is done, with its URL.

There is nothing to poll, so ``submit`` returns ``Finished``. The call blocks for as long as the
picture takes, so it gets a read time-out of its own, longer than the shared client's: the account
option ``timeout`` (seconds), else ``DEFAULT_TIMEOUT``. A time-out while waiting is ``AnswerLost``:
the picture may have been made and paid for.

Errors read ``{"code": -1, "message": M}`` and their HTTP statuses are not documented, so they are
told apart by message (``MESSAGES``), the only part of the contract the provider publishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from jobs.accounts import Account
from jobs.errors import ConfigError
from jobs.offers import Unsupported
from jobs.offers import talecraft as offer
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
    TaskFailed,
    TaskStatus,
    Transient,
    _request_seconds,
    failed_answer,
    json_body,
    retry_after,
)

DEFAULT_TIMEOUT = 300.0
"""Seconds to wait for the picture when the account sets no ``timeout`` option."""
MESSAGES: tuple[tuple[str, type[ProviderError]], ...] = (
    ("api key is required", BadCredentials),
    ("invalid api key", BadCredentials),
    ("prompt is required", InvalidRequest),
    ("unsupported style", InvalidRequest),
    ("unsupported aspect_ratio", InvalidRequest),
    ("insufficient credits", OutOfCredits),
    ("generation failed", Transient),
)
"""The seed's error messages (matched at the start, ignoring case) and what each means."""


class Talecraft(Provider):
    name: ClassVar[str] = "talecraft"
    synchronous: ClassVar[bool] = True

    def __init__(self, client: httpx.Client, account: Account, api_key: str) -> None:
        super().__init__(client, account, api_key)
        self.timeout = _timeout_option(account)
        """Seconds to wait for the answer of one generation."""

    def submit_timeout(self, spec: JobSpec) -> float:
        return _request_seconds(self.client.timeout, self.timeout)

    @classmethod
    def check(cls, spec: JobSpec) -> list[Unsupported]:
        return offer.check(spec)

    def submit(self, spec: JobSpec) -> Finished:
        body: dict[str, Any] = {"prompt": spec.prompt}
        if spec.style is not None:
            body["style"] = spec.style
        if spec.aspect is not None:
            body["aspect_ratio"] = spec.aspect
        body.update(spec.options)
        # Connect, write and pool keep the client's limits; only the wait for the picture is longer.
        limits = self.client.timeout
        timeout = httpx.Timeout(connect=limits.connect, read=self.timeout, write=limits.write, pool=limits.pool)
        request = self.client.build_request(
            "POST",
            f"{self.account.base_url.rstrip('/')}/api/v1/generate",
            headers={"X-API-Key": self._api_key},
            json=body,
            timeout=timeout,
        )
        return _finished(self._send(request, paid=True))

    def poll(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        """Sends nothing: TaleCraft has no task to ask about, the picture came with the submit.

        Should any id reach here all the same, it is answered failed at once rather than left to
        run out its age, since no answer will ever come for it.
        """
        return {task_id: TaskFailed("talecraft has no tasks to poll; its submit answers with the picture")
                for task_id in task_ids}  # fmt: skip


def _timeout_option(account: Account) -> float:
    value = account.options.get("timeout")
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError(f"account {account.name}: options.timeout must be a number of seconds, got {value!r}")
    return seconds


def _finished(response: httpx.Response) -> Finished:
    payload = json_body(response)
    if response.status_code == 429:
        raise RateLimited(f"talecraft 429: {_message(payload) or 'rate limited'}", retry_after(response))
    if isinstance(payload, dict) and payload.get("code") == 0:
        data = payload.get("data")
        url = data.get("image_url") if isinstance(data, dict) else None
        if isinstance(url, str) and url:
            return Finished((Image(url),))
        raise AnswerLost(f"talecraft {response.status_code}: a success without an image_url")
    message = _message(payload)
    if message is None:
        # An answer that cannot be read may hide a picture made and paid for (a gateway's page).
        if response.is_success:
            raise AnswerLost(f"talecraft {response.status_code}: an answer that cannot be read")
        raise failed_answer(response, "talecraft", None, paid=True)
    raise _error_for(response.status_code, message)


def _message(payload: Any) -> str | None:
    """The message of an error in TaleCraft's shape, ``{"code": -1, "message": M}``; None for any
    other body (a gateway's ``{"message": "Internal server error"}`` has no code and says nothing)."""
    code = payload.get("code") if isinstance(payload, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    message = payload.get("message")
    return message if isinstance(message, str) else None


def _error_for(status: int, message: str) -> ProviderError:
    text = f"talecraft {status}: {message}"
    for start, outcome in MESSAGES:
        if message.strip().lower().startswith(start):
            return outcome(text)
    # A message the seed does not list: fall back on what the status says, as any HTTP client would.
    if status in (401, 403):
        return BadCredentials(text)
    if status == 402:
        return OutOfCredits(text)
    if 400 <= status < 500:
        return InvalidRequest(text)
    return Transient(text)
