"""The frame of a fake provider: a provider module is one ``ProviderApi`` subclass, marked ``@register``.

The subclass states only its own contract: its routes, its error body, and its words for the refusals
the frame makes. The frame does what every provider does alike: find the key in the request, refuse
invalid keys and keys past their rate limit or out of credits, record every request in the stats,
hold back the answer of a hanging submit, lose a successful submit's answer at the gateway, and serve
the pictures its tasks make.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.config import ProviderConfig
from sandbox.images import png_bytes
from sandbox.state import UPSTREAM_ERROR_TRIGGER, Account, World, recording_submissions
from sandbox.stats import Answer, Kind, SubmissionRecord

HOLD_BACK_STEP = 0.1
"""Seconds between looks at whether the server is shutting down, while an answer is held back."""
GATEWAY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
"""What nginx in front of a provider sends when the provider's answer does not reach it: no JSON at all."""

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Account], Awaitable[Response]]


class ApiError(Exception):
    """A refusal: HTTP status, the provider's error code and message; the provider renders the body."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class ProviderApi(ABC):
    name: ClassVar[str]
    """The provider id of providers.md; also the path prefix it is served under."""
    base_path: ClassVar[str] = ""
    """What an account's ``base_url`` adds after the prefix (cloudsway's deployment base path)."""
    account_options: ClassVar[dict[str, str]] = {}
    """The account ``options`` a client needs to reach this provider here (cloudsway's endpoint path)."""

    def __init__(self, world: World) -> None:
        self.world = world

    @property
    def config(self) -> ProviderConfig:
        return self.world.provider_config(self.name)

    @abstractmethod
    def routes(self) -> list[BaseRoute]:
        """The provider's routes, relative to its prefix; include ``self.file_route()`` to serve pictures."""

    @abstractmethod
    def error_body(self, code: str, message: str) -> dict[str, Any]:
        """The provider's error JSON."""

    # The refusals the frame makes, in words a provider overrides where its documentation differs.

    def missing_key(self) -> ApiError:
        return ApiError(401, "unauthorized", "Missing or malformed Authorization header: expected 'Bearer <key>'")

    def invalid_key(self) -> ApiError:
        return ApiError(401, "invalid_api_key", "Invalid API key")

    def rate_limited(self, retry_after: int) -> ApiError:
        message = f"Rate limit exceeded: {self.config.rpm} requests per minute; retry in {retry_after} s"
        return ApiError(429, "rate_limited", message, {"Retry-After": str(retry_after)})

    def out_of_credits(self) -> ApiError:
        return ApiError(402, "insufficient_credits", "Insufficient credits")

    def not_found(self, what: str) -> ApiError:
        return ApiError(404, "not_found", f"{what} not found")

    def credential(self, request: Request) -> str:
        """The key the request carries (``Authorization: Bearer KEY`` unless overridden)."""
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise self.missing_key()
        return key.strip()

    def charge(self, account: Account, credits: int) -> None:
        """Take ``credits`` from the key's balance, or refuse when it holds fewer."""
        left = self.world.credits_left(account)
        if left is not None and left < credits:
            raise self.out_of_credits()
        account.spent += credits

    def upstream_failed(self, prompt: str) -> bool:
        """Whether a valid submit answers the provider's server error, before anything is charged or
        started: its prompt asks for it (``UPSTREAM_ERROR_TRIGGER``) or ``error_rate`` draws it."""
        return UPSTREAM_ERROR_TRIGGER in prompt or self.world.server_error(self.name)

    def long_side(self, documented: int) -> int:
        """Pixels on a picture's long side: the documented size, unless the config asks for smaller."""
        return self.world.config.image_long_side or documented

    def error_response(self, error: ApiError) -> Response:
        return JSONResponse(self.error_body(error.code, error.message), error.status, headers=error.headers)

    def endpoint(self, kind: Kind, handler: Handler) -> Endpoint:
        """``handler`` behind the key check and the rate limit, recorded in the stats as ``kind``."""

        async def endpoint(request: Request) -> Response:
            now = time.time()
            key: str | None = None
            hang = 0.0
            with recording_submissions() as submissions:
                try:
                    key = self.credential(request)
                    if not self.world.is_valid_key(key):
                        raise self.invalid_key()
                    account = self.world.account(self.name, key)
                    wait = self.world.admit(account, now)
                    if wait is not None:
                        raise self.rate_limited(wait)
                    if kind == "submit":
                        hang = self.world.answer_delay(self.name)
                    response = await handler(request, account)
                except ApiError as error:
                    response = self.error_response(error)
            if kind == "submit":
                response = self._deliver(response, submissions, hang)
            self.world.stats.record(now, key, self.name, kind, response.status_code)
            await self._hold_back(hang)
            return response

        return endpoint

    def _deliver(self, response: Response, submissions: list[SubmissionRecord], hang: float) -> Response:
        """A submit's answer as the client gets it: at ``gateway_rate`` a success (the work started and
        paid for) becomes a gateway's 502 page. The submissions it made are marked with how it went, so
        the record tells a paid submit whose answer the client never saw."""
        lost = response.status_code < 300 and self.world.gateway_lost(self.name)
        answer: Answer = "held_back" if hang > 0 else "gateway" if lost else "normal"
        for submission in submissions:
            submission.answer = answer
        return Response(GATEWAY_PAGE, 502, media_type="text/html") if lost else response

    async def _hold_back(self, seconds: float) -> None:
        """Wait ``seconds`` before answering, or less if the server is shutting down meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.world.closing and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, HOLD_BACK_STEP))

    def file_route(self, path: str = "/files/{name}") -> Route:
        """The route pictures are downloaded from, without a key, as from a CDN (named ``file``)."""

        async def download(request: Request) -> Response:
            now = time.time()
            try:
                response = await self.file_response(request.path_params["name"], now)
            except ApiError as error:
                response = self.error_response(error)
            self.world.stats.record(now, None, self.name, "download", response.status_code)
            return response

        return Route(path, download, methods=["GET"], name="file")

    def file_url(self, request: Request, name: str) -> str:
        """The absolute URL of a file, on the host and port the client reached us by."""
        return str(request.url_for(f"{self.name}:file", name=name))

    async def file_response(self, name: str, now: float) -> Response:
        stored = self.world.file(self.name, name, now)
        if stored is None:
            raise self.not_found("File")
        if stored.body is None and stored.picture is not None:
            p = stored.picture
            # Drawing a 4K picture takes a while: off the event loop, then cached.
            stored.body = await run_in_threadpool(png_bytes, p.width, p.height, p.seed, p.text, p.transparent)
        return Response(stored.body, media_type=stored.content_type)


async def json_object(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None when it is not one (each provider words that refusal)."""
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


PROVIDERS: dict[str, type[ProviderApi]] = {}
"""Every provider module's API, by provider id, filled by ``@register`` as the modules are imported."""

Api = TypeVar("Api", bound=type[ProviderApi])


def register(api: Api) -> Api:
    """Mark a provider module's API class to be served by ``create_app``."""
    PROVIDERS[api.name] = api
    return api
