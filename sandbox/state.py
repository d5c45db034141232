"""The sandbox's world in memory: accounts, tasks, submissions, files, the rate windows and the record.

Everything here is touched only from the server's event loop (handlers never await while changing
it), so no lock is needed. ``reset`` starts a fresh world with the config the server started with.
Provider modules keep no state of their own: they read and write this world in their own words.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from sandbox.config import ProviderConfig, SandboxConfig
from sandbox.ratelimit import SlidingWindow
from sandbox.stats import Stats, SubmissionRecord, key_id

FAIL_TRIGGER = "sandbox:fail"
"""A prompt containing this makes every task it starts end failed."""
UPSTREAM_ERROR_TRIGGER = "sandbox:upstream_error"
"""A prompt containing this makes the submit itself answer the provider's server error."""
UNSAFE_TRIGGER = "sandbox:unsafe"
"""A prompt containing this is refused as unsafe content, in the provider's words, where it has such a refusal."""
FAILURE_MESSAGE = "model overloaded"

QUEUED_SHARE = 0.1
"""Share of a task's duration spent queued before it shows as running."""


class Phase(Enum):
    """Where a task is, in words common to all providers; each provider names them its own way."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class Account:
    """One key at one provider, created on its first request."""

    provider: str
    key: str
    spent: int = 0
    """Credits used so far; what is left is the provider's ``credits`` minus this."""

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    @property
    def email(self) -> str:
        return f"user-{self.key_id}@example.com"


@dataclass(frozen=True)
class Picture:
    """A picture to draw on first download: size in pixels, seed, and the text written on it."""

    width: int
    height: int
    seed: int
    text: str
    transparent: bool = False


@dataclass
class StoredFile:
    """A file the provider serves: a picture drawn lazily (then cached in ``body``) or uploaded bytes."""

    content_type: str
    available_at: float
    """Unix seconds from which it can be fetched (a result exists once its task has finished)."""
    body: bytes | None = None
    picture: Picture | None = None


@dataclass
class Task:
    id: str
    provider: str
    key: str
    prompt: str
    params: Mapping[str, Any]
    created_at: float
    ready_at: float
    """Unix seconds at which it finishes, succeeded or failed."""
    will_fail: bool
    files: tuple[str, ...]
    """Names in the file store of the pictures it makes."""
    error: str = FAILURE_MESSAGE

    def progress(self, now: float) -> tuple[Phase, int]:
        """Phase and percent done at ``now``: queued briefly, then running, then finished at ``ready_at``."""
        if now >= self.ready_at:
            return (Phase.FAILED, 0) if self.will_fail else (Phase.SUCCEEDED, 100)
        duration = self.ready_at - self.created_at
        elapsed = now - self.created_at
        if elapsed < QUEUED_SHARE * duration:
            return Phase.QUEUED, 0
        return Phase.RUNNING, max(1, min(99, int(100 * elapsed / duration)))


@dataclass
class Submission:
    """One accepted submit request: what a provider's history lists."""

    id: str
    provider: str
    key: str
    prompt: str
    params: Mapping[str, Any]
    task_ids: tuple[str, ...]
    """The world's ids of the tasks it started."""
    created_at: float
    client_task_ids: tuple[str | int, ...] = ()
    """The task ids as the client reads them in the answer, where they differ from ``task_ids``
    (qtpixel's bare integers); empty means the same."""


_recorded_here: ContextVar[list[SubmissionRecord] | None] = ContextVar("recorded_here", default=None)
"""The stats records of the submissions the current request made, while ``recording_submissions`` collects them."""


@contextmanager
def recording_submissions() -> Iterator[list[SubmissionRecord]]:
    """Collect the stats records of the submissions made inside, by this request alone: uvicorn serves
    each request in its own asyncio task, and a context variable set in one task is unseen by the others,
    so concurrent submits (talecraft's wait while its picture is drawn) never take each other's."""
    collected: list[SubmissionRecord] = []
    token = _recorded_here.set(collected)
    try:
        yield collected
    finally:
        _recorded_here.reset(token)


@dataclass
class World:
    initial_config: SandboxConfig
    config: SandboxConfig = field(init=False)
    rng: random.Random = field(init=False)
    accounts: dict[tuple[str, str], Account] = field(init=False)
    tasks: dict[str, Task] = field(init=False)
    submissions: list[Submission] = field(init=False)
    files: dict[tuple[str, str], StoredFile] = field(init=False)
    """By provider and file name."""
    windows: SlidingWindow = field(init=False)
    stats: Stats = field(init=False)
    closing: bool = False
    """Set when the server shuts down, so answers held back are sent rather than cut off."""

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything, including config changes made at run time."""
        self.config = self.initial_config
        self.rng = random.Random(self.config.seed)
        self.accounts = {}
        self.tasks = {}
        self.submissions = []
        self.files = {}
        self.windows = SlidingWindow()
        self.stats = Stats()

    def snapshot(self) -> dict[str, Any]:
        """What a provider would still know after a restart: accounts, tasks, submissions and files
        (pictures without their drawn bytes, which are drawn again on demand)."""
        files = {
            where: replace(stored, body=None) if stored.picture is not None else stored
            for where, stored in self.files.items()
        }
        return {"accounts": self.accounts, "tasks": self.tasks, "submissions": self.submissions, "files": files}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        self.accounts = dict(snapshot["accounts"])
        self.tasks = dict(snapshot["tasks"])
        self.submissions = list(snapshot["submissions"])
        self.files = dict(snapshot["files"])

    def provider_config(self, provider: str) -> ProviderConfig:
        return self.config.provider(provider)

    def is_valid_key(self, key: str) -> bool:
        return bool(key) and not key.startswith(self.config.invalid_key_prefix)

    def account(self, provider: str, key: str) -> Account:
        return self.accounts.setdefault((provider, key), Account(provider, key))

    def credits_left(self, account: Account) -> int | None:
        credits = self.provider_config(account.provider).credits
        return None if credits is None else max(0, credits - account.spent)

    def admit(self, account: Account, now: float) -> int | None:
        """Count a request against the key's rate limit; None, or seconds to wait when past it."""
        limit = self.provider_config(account.provider).rpm
        return self.windows.admit((account.provider, account.key), limit, now)

    def answer_delay(self, provider: str) -> float:
        """Seconds to hold back this submit's answer: usually 0, ``hang_seconds`` at ``timeout_rate``."""
        config = self.provider_config(provider)
        return config.hang_seconds if self.rng.random() < config.timeout_rate else 0.0

    def server_error(self, provider: str) -> bool:
        """Whether this submit answers the provider's server error instead, at ``error_rate``."""
        return self._chance(self.provider_config(provider).error_rate)

    def gateway_lost(self, provider: str) -> bool:
        """Whether this successful submit's answer is lost at the gateway, at ``gateway_rate``."""
        return self._chance(self.provider_config(provider).gateway_rate)

    def _chance(self, rate: float) -> bool:
        """True at ``rate``; at 0 nothing is drawn, so a seeded run that sets no such rate draws the
        same latencies and failures as before the rate existed."""
        return rate > 0 and self.rng.random() < rate

    def start_task(
        self,
        task_id: str,
        account: Account,
        prompt: str,
        params: Mapping[str, Any],
        pictures: Sequence[Picture],
    ) -> Task:
        """A task that runs for a drawn duration and then succeeds with ``pictures``, or fails."""
        config = self.provider_config(account.provider)
        now = time.time()
        duration = max(0.0, self.rng.uniform(-1, 1) * config.latency_jitter + config.latency_mean)
        will_fail = FAIL_TRIGGER in prompt or self.rng.random() < config.failure_rate
        names = (f"{task_id}.png",) if len(pictures) == 1 else tuple(f"{task_id}-{i}.png" for i in range(len(pictures)))
        task = Task(
            task_id, account.provider, account.key, prompt, params, now, now + duration, will_fail,
            () if will_fail else names,
        )  # fmt: skip
        self.tasks[task_id] = task
        self.stats.task_started(task_id, account.key, account.provider, task.created_at, task.ready_at)
        for name, picture in zip(task.files, pictures, strict=False):
            self.files[account.provider, name] = StoredFile("image/png", task.ready_at, picture=picture)
        return task

    def record_submission(self, submission: Submission) -> None:
        """The one place a submit that started work is recorded: in the provider's history and in the
        stats, where the request being answered (``recording_submissions``) can mark how its answer went."""
        self.submissions.append(submission)
        record = self.stats.submission(
            submission.created_at, submission.key, submission.provider, submission.prompt, submission.params,
            submission.client_task_ids or submission.task_ids,
        )  # fmt: skip
        collected = _recorded_here.get()
        if collected is not None:
            collected.append(record)

    def task(self, account: Account, task_id: str) -> Task | None:
        """The task, if it exists at this provider and belongs to this key (another key's is not found)."""
        task = self.tasks.get(task_id)
        if task is None or task.provider != account.provider or task.key != account.key:
            return None
        return task

    def polled_task(self, account: Account, task_id: str, now: float) -> Task | None:
        """The task, as ``task`` finds it, for a poll that asks about it at ``now``: the stats note the ask."""
        task = self.task(account, task_id)
        if task is not None:
            self.stats.task_polled(task.id, now)
        return task

    def history(self, account: Account) -> list[Submission]:
        """The key's submissions at its provider, newest first."""
        mine = [s for s in self.submissions if s.provider == account.provider and s.key == account.key]
        return mine[::-1]

    def add_file(self, provider: str, name: str, content_type: str, body: bytes) -> None:
        """A file served from now on, such as an uploaded reference picture."""
        self.files[provider, name] = StoredFile(content_type, time.time(), body=body)

    def file(self, provider: str, name: str, now: float) -> StoredFile | None:
        """The file, once it is available."""
        stored = self.files.get((provider, name))
        return stored if stored is not None and now >= stored.available_at else None


def picture_seed(*parts: str) -> int:
    """A stable seed from names, so a picture looks the same on every fetch and every run."""
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big")
