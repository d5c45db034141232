"""The small interface every provider adapter implements, and the outcomes it speaks in.

An adapter turns a ``JobSpec`` into the provider's request and the provider's answer into one of a
few outcomes. Before anything is sent, ``check`` says what of a job the provider cannot do, so a batch
file is refused at load rather than paid for and failed. Submits answer ``Started`` (provider task
ids to poll) or, for a synchronous provider, ``Finished``; polls answer a status per provider task.

The outcomes are the ``ProviderError`` branch of the one tree in ``jobs.errors``.

Foreign errors (httpx's) are translated here, at one boundary, by ``http_outcome``: for a provider
call (``send``) and a picture download (``workers.collect``) alike. What a failed answer
means is decided here too, by ``failed_answer``, one rule for every adapter: only the provider's own
documented error (its error body, in its documented shape) says nothing was started and may be sent
again. Anything else after a paid request left (a gateway's 502/503/504 page, a time-out, a cut
body, an answer that cannot be read) is a lost answer: the provider may have taken the job.
"""

from __future__ import annotations

import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import httpx

from jobs.accounts import Account
from jobs.errors import (
    AnswerLost,
    AnswerTooLarge,
    BadCredentials,
    DestinationRefused,
    InvalidRequest,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Refused,
    Transient,
    Unreadable,
)
from jobs.offers import Unsupported
from jobs.spec import JobSpec

__all__ = [
    "AnswerLost", "AnswerTooLarge", "BadCredentials", "InvalidRequest", "OutOfCredits", "ProviderError",
    "RateLimited", "Refused", "Transient", "Unreadable",
]  # fmt: skip
"""The provider outcomes live in ``jobs.errors`` with the rest of the tree; adapters import them here."""


Decision = TypeVar("Decision")
Keyed = TypeVar("Keyed", bound=BaseException)


def decide(table: Mapping[type[Keyed], Decision], error: Keyed) -> Decision:
    """The entry of ``table`` for the nearest class of ``error`` (a subclass takes its parent's):
    policies are tables keyed by class, never matched by message or looked up by exact type."""
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    raise TypeError(f"no decision for {type(error).__name__}")


@dataclass(frozen=True)
class Started:
    task_ids: tuple[str, ...]
    """The provider's ids of the tasks this submit started, in order."""
    credits_remaining: float | None = None
    credits_used: int | None = None
    """What the provider says the submit charged, where it says (girlgenerator); else its ``cost``."""


@dataclass(frozen=True)
class Image:
    url: str
    """Where the picture can be downloaded; a ``data:`` URL when the provider sent the bytes inline."""


@dataclass(frozen=True)
class Finished:
    images: tuple[Image, ...]


@dataclass(frozen=True)
class StillRunning:
    progress: int | None = None


@dataclass(frozen=True)
class TaskFailed:
    reason: str
    refused: bool = False
    """True when the provider refused the content: a retry would be refused again."""


@dataclass(frozen=True)
class Sighting:
    """A submit found in the provider's own record (its history, its task list): how a lost answer
    is settled without paying again."""

    remote_id: str
    """The provider's id of the submission (a history id, a batch, a task)."""
    task_ids: tuple[str, ...] = ()
    """The tasks to poll, where the record names them."""
    images: tuple[Image, ...] = ()
    """The pictures made so far, where the record names no tasks."""
    complete: bool = False
    """Whether ``images`` holds every picture the submission will make."""
    expected: int = 0
    """Pictures the submission asked for, where the record says (0: it does not)."""


TaskStatus = Finished | StillRunning | TaskFailed
Submitted = Started | Finished


@dataclass(frozen=True)
class Cost:
    """What one job will spend, for ``genq plan``: before anything is sent."""

    requests: int = 1
    """Paid and unpaid calls to submit it (a reference upload is one more)."""
    tasks: int = 1
    """Provider tasks it starts, each polled until done."""
    pictures: int = 1
    credits: int = 1


DEFAULT_ANSWER_CAP = 2 * 1024 * 1024
"""Bytes of a provider's answer read at most (``GENQ_MAX_ANSWER_BYTES``), after decoding."""
DEFAULT_RETRY_AFTER = 60.0
"""Seconds to pause after a 429 that names no wait."""


class Provider(ABC):
    """One provider's API, bound to one account and one HTTP client.

    Adapters never build an ``httpx.Client``; they are handed one, so tests can bind it to the
    sandbox or to ``httpx.MockTransport``.
    """

    name: ClassVar[str]
    batch_poll_size: ClassVar[int] = 1
    """How many provider tasks one poll request may ask about."""
    polls_count_against_limit: ClassVar[bool] = True
    """Whether the provider counts polls in the key's requests per minute, unless an account says
    otherwise (``polls_count``). True for every provider: where the limit is not published, a poll
    taken as free draws 429s that pause the account's submits too. Read it through ``polls_count``."""
    typical_seconds: ClassVar[float] = 30.0
    """How long a picture takes, before genq has learned it (``genq plan`` uses it)."""
    synchronous: ClassVar[bool] = False
    """Whether a submit answers only when the picture is done (it then returns ``Finished``)."""
    keeps_record: ClassVar[bool] = False
    """Whether the provider lists past submits (``find_submissions``), so a lost answer can be found."""

    def __init__(self, client: httpx.Client, account: Account, api_key: str) -> None:
        self.client = client
        self.account = account
        self._api_key = api_key
        self.answer_cap = DEFAULT_ANSWER_CAP
        """Bytes of an answer read at most; the runtime sets it from ``max_answer_bytes``."""
        self.secrets: tuple[str, ...] = (api_key,)
        """Keys scrubbed from every answer: this account's; the runtime sets every configured one."""

    def _send(self, request: httpx.Request, *, paid: bool) -> httpx.Response:
        """``send``, capped, with this account's key scrubbed from whatever comes back."""
        return send(self.client, request, paid=paid, cap=self.answer_cap, secrets=self.secrets)

    @classmethod
    def check(cls, spec: JobSpec) -> list[Unsupported]:
        """What of ``spec`` this provider cannot do; empty when it can. Sends nothing."""
        return []

    @classmethod
    def cost(cls, spec: JobSpec) -> Cost:
        """What ``spec`` will spend; by default one request, one task, a credit a picture."""
        return Cost(pictures=spec.count, credits=spec.count)

    @classmethod
    def poll_group(cls, task_id: str) -> str:
        """Tasks with the same group may be asked about in one poll request (up to ``batch_poll_size``).

        Most providers take any ids together, or one at a time; a provider that polls by a batch of
        its own (qtpixel's sprite batches) groups a task with the others of its batch.
        """
        return "" if cls.batch_poll_size > 1 else task_id

    def submit_timeout(self, spec: JobSpec) -> float:
        """Seconds a submit of ``spec`` may take, every request it makes counted (connect, write and
        read each): how long its job's lease must last, so the reconciler never takes a live call."""
        return self.requests_per_submit(spec) * _request_seconds(self.client.timeout, self.client.timeout.read)

    def requests_per_submit(self, spec: JobSpec) -> int:
        """Requests one submit of ``spec`` makes in a row (a reference upload is one more)."""
        return self.cost(spec).requests

    @abstractmethod
    def submit(self, spec: JobSpec) -> Submitted:
        """Send one generation; raise a ``ProviderError`` when nothing usable came back."""

    @abstractmethod
    def poll(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        """The status of up to ``batch_poll_size`` provider tasks of one ``poll_group``, keyed by id."""

    def delete(self, task_id: str) -> bool:
        """End a provider task at the provider, for ``genq cancel --running``; whether the provider
        has a documented way to (most do not: their tasks run to the end and are simply not polled)."""
        return False

    def find_submissions(self, spec: JobSpec, since: datetime, until: datetime) -> list[Sighting]:
        """Submits of ``spec`` the provider recorded between ``since`` and ``until``, oldest first.

        Only for a provider that ``keeps_record``; the search reads a bounded number of pages.
        """
        raise NotImplementedError(f"{self.name} keeps no record of past submits")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} account={self.account.name}>"


def polls_count(account: Account, adapter: type[Provider] | Provider) -> bool:
    """Whether a poll of this account takes a request from its allowance: the account's
    ``polls_count`` where it gives one, else the provider's default. Polling, admission and
    ``genq plan`` all ask here, so what is spent and what is planned agree."""
    return adapter.polls_count_against_limit if account.polls_count is None else account.polls_count


def _request_seconds(timeout: httpx.Timeout, read: float | None) -> float:
    """The longest one request may take under ``timeout``, with ``read`` as its read time-out."""
    return sum(part or 60.0 for part in (timeout.connect, timeout.write, read))


def send(
    client: httpx.Client,
    request: httpx.Request,
    *,
    paid: bool,
    cap: int = DEFAULT_ANSWER_CAP,
    secrets: Sequence[str] = (),
) -> httpx.Response:
    """Send a request and read its answer, translating transport failures into the outcomes above.

    A failure before the request left (no connection) is ``Transient``. One after it left is
    ``AnswerLost`` when the call is ``paid`` (the provider may have started the work), else
    ``Transient``: a lost poll costs nothing to repeat. The body is read as it is decoded, at most
    ``cap`` bytes (a 200 MB answer or a gzip bomb stops there: ``AnswerTooLarge``), and every
    ``secrets`` value in it is replaced by ``***``: provider text that echoes a key never reaches
    an exception, a log line or a row.
    """
    try:
        response = client.send(request, stream=True)
        try:
            body = read_capped(response, cap)
        finally:
            response.close()
    except HTTP_ERRORS as error:
        raise http_outcome(error, request.url, paid=paid) from None
    if body is None:
        what = f"{request.url.host} answered more than {cap} bytes"
        raise AnswerTooLarge(f"{what}; the request may have been taken" if paid else what)
    for secret in secrets:
        for form in _written_forms(secret):
            body = body.replace(form, b"***")
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    return httpx.Response(response.status_code, headers=headers, content=body, request=request)


GATEWAY_STATUSES = frozenset({502, 503, 504})
"""A gateway's statuses: on a paid call they say nothing of whether the origin took the job, even
with a body that looks like the provider's."""

_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
"""Headers of the body as sent; the answer handed on holds it decoded, and maybe scrubbed."""


def _written_forms(secret: str) -> set[bytes]:
    """The ways a key can stand in an answer: as it is, and as JSON escapes it (``/`` as ``\\/``,
    non-ASCII as ``\\uXXXX``)."""
    if not secret:
        return set()
    escaped = json.dumps(secret)[1:-1]
    return {secret.encode(), escaped.encode(), escaped.replace("/", "\\/").encode()}


def read_capped(response: httpx.Response, cap: int) -> bytes | None:
    """The decoded body, or None as soon as it grows past ``cap`` bytes (the rest is never read).

    A gzip or deflate body is inflated here, never more than ``cap`` bytes past what was kept: httpx
    inflates each network read whole, so a few kilobytes of a gzip bomb would take a worker's memory
    before any cap could look at them. A body that does not inflate is an ``httpx.DecodingError``, as
    httpx would raise it. Other encodings are left to httpx.
    """
    decoder = _inflater(response.headers.get("content-encoding", ""))
    body = bytearray()
    if decoder is None:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > cap:
                return None
        return bytes(body)
    try:
        for raw in response.iter_raw():
            pending = raw
            while pending:
                body += decoder.decompress(pending, cap + 1 - len(body))
                if len(body) > cap:
                    return None
                pending = decoder.unconsumed_tail
        body += decoder.flush()
    except zlib.error as error:
        raise httpx.DecodingError(f"the body does not inflate: {error}", request=response.request) from None
    return None if len(body) > cap else bytes(body)


def _inflater(encoding: str) -> Any:
    """A zlib decompressor for a gzip or deflate body, or None for any other encoding. ``deflate`` is the
    zlib format, as HTTP defines it; a raw deflate stream (some servers send one) does not inflate."""
    kind = encoding.strip().lower()
    if kind in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == "deflate":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)
    return None


HTTP_ERRORS: tuple[type[Exception], ...] = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.StreamError,
    httpx.CookieConflict,
    DestinationRefused,
)
"""What sending a request and reading its answer can raise: every class httpx exports, and the
guard's refusal, which passes through ``client.send`` as it is. ``StreamError`` and ``CookieConflict``
are bugs in genq, but one may come after a paid request left, so they too become an outcome (lost,
for a paid call) rather than a crash that leaves the job where it was."""

NOT_SENT: tuple[type[httpx.RequestError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)
"""httpx errors raised before any byte of the request reached the provider."""
_LOST_WORDS: dict[type[Exception], str] = {
    httpx.HTTPError: "the request failed",
    httpx.TimeoutException: "timed out",
    httpx.ReadTimeout: "timed out waiting for the answer",
    httpx.WriteTimeout: "timed out sending the request",
    httpx.NetworkError: "the connection broke",
    httpx.ReadError: "the connection broke mid-answer",
    httpx.WriteError: "the connection broke while sending",
    httpx.ProtocolError: "the connection broke the HTTP protocol",
    httpx.RemoteProtocolError: "the connection closed mid-answer",
    httpx.DecodingError: "an answer body that cannot be decoded",
    httpx.TooManyRedirects: "redirected too many times",
    httpx.StreamError: "a body read twice or after it closed, a bug in genq",
    httpx.CookieConflict: "two cookies of one name, a bug in genq",
}
"""What a failure after the request left says, for a reason a person reads; looked up through the MRO."""


def http_outcome(error: Exception, url: httpx.URL | str, *, paid: bool) -> ProviderError:
    """What a request that raised ``error`` (one of ``HTTP_ERRORS``) means: the one translation of
    httpx's errors, for a provider call and a picture download alike.

    Refused before any connection (the guard's ``DestinationRefused``, a URL httpx cannot take):
    ``InvalidRequest``, final. Failed before the request left (``NOT_SENT``): ``Transient``. Failed
    after it left: ``AnswerLost`` when the call is ``paid`` (the provider may have started the work),
    else ``Transient``: a lost poll or download costs nothing to repeat. A status raised by
    ``raise_for_status`` is judged as an answer with no documented error is. The message names the
    host, never the URL's path or query, which may carry a signature or a key.
    """
    host = _host(url)
    if isinstance(error, DestinationRefused):
        return InvalidRequest(f"refused to connect: {error}")
    if isinstance(error, httpx.InvalidURL):
        return InvalidRequest(f"{host or 'a URL'} cannot be requested: not a valid URL")
    if isinstance(error, httpx.HTTPStatusError):
        return _status_outcome(error.response, host, paid=paid)
    if isinstance(error, NOT_SENT):
        return Transient(f"could not connect to {host}: {type(error).__name__}")
    what = f"no answer from {host}: {decide(_LOST_WORDS, error)} ({type(error).__name__})"
    return AnswerLost(f"{what}; the request may have been taken") if paid else Transient(what)


def _status_outcome(response: httpx.Response, host: str, *, paid: bool) -> ProviderError:
    """A failed status as ``failed_answer`` judges one with no documented error, from the status and
    headers alone (the body of a streamed answer may not have been read)."""
    if response.status_code == 429:
        return RateLimited(f"{host} 429: rate limited", retry_after(response))
    what = f"{host} answered {response.status_code}"
    return AnswerLost(f"{what}; the request may have been taken") if paid else Transient(what)


def _host(url: httpx.URL | str) -> str:
    """The host of ``url``, or "" when it has none or cannot be parsed."""
    try:
        return (url if isinstance(url, httpx.URL) else httpx.URL(url)).host
    except (httpx.InvalidURL, TypeError, ValueError):
        return ""


def failed_answer(
    response: httpx.Response, provider: str, documented: ProviderError | None, *, paid: bool
) -> ProviderError:
    """What a non-success answer means: the one rule every adapter follows.

    ``documented`` is what the adapter read from a body in the provider's own documented error
    shape, or None when the body is not in that shape (a gateway's page, an empty body). Only a
    documented error says what happened; without one, a paid request may have been taken, so the
    answer is lost (a 429 is the exception: any server in the way that says so has started nothing).
    """
    status = response.status_code
    if documented is not None and not (paid and status in GATEWAY_STATUSES):
        return documented
    if status == 429:
        return RateLimited(f"{provider} 429: rate limited", retry_after(response))
    what = f"{provider} {status}: {describe_body(response)}, not the provider's own error"
    return AnswerLost(f"{what}; the request may have been taken") if paid else Transient(what)


def unreadable(response: httpx.Response, provider: str, *, paid: bool) -> ProviderError:
    """A success whose body cannot be read: lost for a paid call (a task may have started)."""
    what = f"{provider} {response.status_code}: an answer that cannot be read ({describe_body(response)})"
    return AnswerLost(what) if paid else Unreadable(what)


def describe_body(response: httpx.Response) -> str:
    """A few words on an answer's body for a reason; never its text, which may echo a key."""
    kind = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    if not response.content:
        return f"an empty body ({kind})"
    if "html" in kind:
        return f"a gateway page ({kind}, {len(response.content)} bytes)"
    return f"a {kind} body of {len(response.content)} bytes"


def json_body(response: httpx.Response) -> Any:
    """The JSON of an answer, or ``None`` when it is not JSON (an HTML error page, a cut body)."""
    try:
        return json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def retry_after(response: httpx.Response) -> float:
    """Seconds from a Retry-After header in its seconds form, else the default."""
    value = response.headers.get("retry-after", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return DEFAULT_RETRY_AFTER
