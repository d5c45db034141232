"""Every exception genq raises, in one tree (the bottom floor: every package may use it).

    GenqError
     ├── BatchFileError        a batch file is refused; carries every problem (file, line, field)
     ├── ConfigError           accounts.yaml or a setting is wrong
     ├── StorageError          the object store refused a read or a write
     ├── RedisUnavailable      Redis failed a command (limits, pauses, heartbeats wait or do without)
     ├── DatabaseError         the database refused a statement: bad data, a schema behind its code
     │    └── DatabaseUnavailable  no answer (a restart, a failover, a full pool): worth waiting for
     ├── NotFound              a batch or job id that does not exist
     ├── NothingToRetry        a retry asked of a batch with no such row, or still running (jobs.retry)
     ├── PictureRefused        a picture that is not taken (``final`` when fetching it again cannot help)
     │    └── PictureRateLimited  its host answered 429: fetched again after Retry-After
     ├── WorkerDied            the worker a command started stopped under it
     ├── BatchPaused           the batch a command follows was paused (by hand or at its budget)
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
boundary each, and ``tests/test_error_tree.py`` walks every class of each library to find it mapped
(raised ``from`` the original, except httpx's: a request's text may carry a key):

- httpx (and the guard's ``DestinationRefused`` beneath it): ``workers.providers.base.http_outcome``,
  for a provider call (``send``) and a picture download (``workers.collect``) alike;
- redis: ``jobs.rediscalls.talking_to_redis``;
- SQLAlchemy: ``jobs.db.database_error``, applied by ``session_scope``, ``migrate`` and
  ``while_the_database_is_back``;
- obstore: ``jobs.storage.storage_error``;
- Pillow: ``workers.collect.check_picture`` for pictures fetched, ``jobs.sheets`` for the frames of a sheet.
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


class RedisUnavailable(GenqError):
    """Redis failed a command: unreachable, restarting, loading its file, read-only after a failover,
    or refusing the command. What genq keeps there (rate limits, pauses, heartbeats, learned poll
    delays, wake-up messages) is waited for or done without; the database keeps the record, so this
    costs a delay, never a job."""


class DatabaseError(GenqError):
    """The database refused a statement: data it will not take, or a schema behind the code asking.
    Running it again gives the same answer."""


class DatabaseUnavailable(DatabaseError):
    """The database did not answer: a restart, a failover, a dropped connection, a pool with no
    connection to spare. Worth waiting for: the record of a paid answer is written again until it
    comes back."""


class NotFound(GenqError):
    """A batch or job that is not in the database."""


class PictureRefused(GenqError):
    """A picture that cannot be taken; ``final`` when downloading it again cannot help."""

    def __init__(self, message: str, *, final: bool) -> None:
        super().__init__(message)
        self.final = final


class PictureRateLimited(PictureRefused):
    """A picture's host answered 429: fetched again after ``retry_after`` seconds. When the host is the
    provider's own, its account pauses for that long too (a provider counts downloads in its limit)."""

    def __init__(self, message: str, *, retry_after: float, host: str) -> None:
        super().__init__(message, final=False)
        self.retry_after = retry_after
        self.host = host


class WorkerDied(GenqError):
    """The worker process a command started is gone while its batch runs."""


class BatchPaused(GenqError):
    """The batch a foreground command follows is paused and nothing of it is in flight: the command
    ends (exit code 3) rather than wait for a person to resume it."""

    def __init__(self, batch_id: int, reason: str) -> None:
        super().__init__(f"batch {batch_id} paused: {reason}")
        self.batch_id = batch_id


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
