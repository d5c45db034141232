"""Every exception genq raises, in one tree (the bottom floor: every package may use it).

    GenqError
     ├── BatchFileError        a batch file is refused; carries every problem (file, line, field)
     ├── ConfigError           accounts.yaml or a setting is wrong
     ├── StorageError          the object store refused a read or a write
     ├── NotFound              a batch or job id that does not exist
     ├── PictureRefused        a picture that is not taken (``final`` when fetching it again cannot help)
     ├── WorkerDied            the worker a command started stopped under it
     ├── IllegalTransition     a move the job state machine does not have: a bug, never an input error
     ├── DestinationRefused    a URL genq will not fetch (not http(s), a private address...)
     │    └── NameNotResolved  a host that resolves to no address
     └── ProviderError         a provider answer that is not a result; the message never carries a key
          ├── RateLimited(retry_after)   wait, then send again; the account pauses for the fleet
          ├── BadCredentials             the key is wrong or revoked
          ├── OutOfCredits               the account cannot pay
          ├── InvalidRequest             the provider will never take this request as it is
          ├── Refused                    the content was refused; final
          ├── Transient                  nothing was started; a retry can help
          ├── Unreadable                 an answer to an unpaid call (a poll) that cannot be read
          ├── AnswerLost                 the request may have been taken and paid for; no answer came
          └── AnswerTooLarge             an answer past the cap, never read whole

What each provider outcome leads to is decided by tables keyed by class (``workers.submission``,
``workers.polling``), looked up through the class's MRO. Foreign errors are translated at one
boundary each: httpx's in ``workers.providers.base.send`` and ``workers.collect``, obstore's in
``jobs.storage``.
"""

from __future__ import annotations

from dataclasses import dataclass


class GenqError(Exception):
    """Anything genq refuses on purpose, with a message meant for the person running it."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an input file: where it is and what is wrong."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class BatchFileError(GenqError):
    """A batch file that cannot be taken as it is. Nothing of it has been written."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigError(GenqError):
    """A configuration that cannot work; the message names the account and variable, never a key."""


class StorageError(GenqError):
    """The object store could not read or write a key."""


class NotFound(GenqError):
    """A batch or job that is not in the database."""


class PictureRefused(GenqError):
    """A picture that cannot be taken; ``final`` when downloading it again cannot help."""

    def __init__(self, message: str, *, final: bool) -> None:
        super().__init__(message)
        self.final = final


class WorkerDied(GenqError):
    """The worker process a command started is gone while its batch runs."""


class IllegalTransition(GenqError):
    """A move the state machine does not have; a bug in the caller, never an input error."""


class DestinationRefused(GenqError):
    """A URL genq will not fetch, refused before any connection was made.

    Final: fetching it again is refused again. The message names the URL's host and why (never its
    path, query or user info, which may carry a signature or a password). It is not an httpx error,
    so it passes through ``client.send`` as it is; whoever sends must treat it as final, not as a
    lost answer or a failed connection.
    """

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host} {reason}" if host else reason)
        self.host = host
        self.reason = reason


class NameNotResolved(DestinationRefused):
    """A host that resolves to no address. The transport reports it as ``httpx.ConnectError`` (a DNS
    failure may pass); ``check_url`` refuses it, as a batch file's reference must resolve."""


class ProviderError(GenqError):
    """A provider answer that is not a result; the message never carries the key."""


class RateLimited(ProviderError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds to wait before this key sends again."""


class BadCredentials(ProviderError):
    pass


class OutOfCredits(ProviderError):
    pass


class InvalidRequest(ProviderError):
    pass


class Refused(ProviderError):
    pass


class Transient(ProviderError):
    pass


class Unreadable(ProviderError):
    """An answer to an unpaid call (a poll) that cannot be read: asked again a few times, not forever."""


class AnswerLost(ProviderError):
    pass


class AnswerTooLarge(ProviderError):
    """An answer past ``max_answer_bytes``: for a submit, lost (the job may have been taken); a poll
    that answers so is never read, and its tasks fail."""
