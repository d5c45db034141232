"""What the sandbox saw: every request, every submit that started work, and every one that repeated.

Tests and benchmarks judge a client by this record, the way a provider's bill would: how many
requests each key sent of each kind, how many were turned away for the rate limit, how many paid
submits were sent twice, and which paid submits' answers never reached the client as sent (a
gateway's 502 page in their place, or held back past any time-out); and, for every task, when its
picture was done and when each poll asked about it, so a client's polls can be judged against the
pictures (how long a done picture waited for its first poll). Keys appear only as ``key_id`` (a short
hash), never in the clear.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

Kind = Literal["submit", "poll", "poll_many", "upload", "history", "status", "download"]
Answer = Literal["normal", "gateway", "held_back"]
"""How a paid submit's answer went: sent as the provider wrote it; replaced by a gateway's 502 page
(``gateway_rate``); or held back ``hang_seconds`` (``timeout_rate``), whatever it was, a 502 page
included, since a client most likely gave up first."""


def key_id(key: str) -> str:
    """The first 8 hex characters of sha256(key): names a key in the record without revealing it."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def busiest_minute(times: list[float]) -> int:
    """The most requests any 60-second window of the record holds (each window ending at a request),
    as a provider with a sliding minute counts them."""
    times = sorted(times)
    return max((i + 1 - bisect_right(times, t - 60.0, 0, i + 1) for i, t in enumerate(times)), default=0)


@dataclass(frozen=True)
class RequestRecord:
    t: float
    """Unix time in seconds when the request arrived."""
    key_id: str | None
    """None when the request carried no key (a file download, a missing header)."""
    provider: str
    kind: Kind
    status: int


@dataclass(frozen=True)
class RepeatedSubmission:
    t: float
    key_id: str
    provider: str
    prompt: str
    times: int
    """How many times this key has now sent this prompt with these parameters (2 for the first repeat)."""


@dataclass
class SubmissionRecord:
    """One submit that started (paid) work, and whether the client saw its answer."""

    t: float
    key_id: str
    provider: str
    prompt: str
    task_ids: list[str | int]
    """As the client reads them in the answer: gencraft's ``task_ids``, girlgenerator's ``task_id``,
    qtpixel's integer ids (one, or a batch's), cloudsway's ``taskId``, talecraft's ``data.id``."""
    answer: Answer = "normal"
    """Set by the frame once the answer is decided, after the provider recorded the submission."""


@dataclass
class TaskRecord:
    """One task a submit started: when it was done, and when each poll asked about it."""

    id: str
    key_id: str
    provider: str
    created_at: float
    done_at: float
    """Unix seconds at which it finished (succeeded or failed): from then on a poll finds it done."""
    polls: list[float]
    """Unix seconds of every poll that asked about it, in order."""


class Stats:
    def __init__(self) -> None:
        self.requests: list[RequestRecord] = []
        self.repeats: list[RepeatedSubmission] = []
        self.submissions: list[SubmissionRecord] = []
        self.tasks: dict[str, TaskRecord] = {}
        self._fingerprints: Counter[tuple[str, str, str]] = Counter()

    def record(self, t: float, key: str | None, provider: str, kind: Kind, status: int) -> None:
        self.requests.append(RequestRecord(t, None if key is None else key_id(key), provider, kind, status))

    def task_started(self, task_id: str, key: str, provider: str, created_at: float, done_at: float) -> None:
        self.tasks[task_id] = TaskRecord(task_id, key_id(key), provider, created_at, done_at, [])

    def task_polled(self, task_id: str, t: float) -> None:
        """A poll asked about the task at ``t`` (a task started before a reset is not recorded)."""
        record = self.tasks.get(task_id)
        if record is not None:
            record.polls.append(t)

    def submission(
        self, t: float, key: str, provider: str, prompt: str, params: Mapping[str, Any], task_ids: Sequence[str | int]
    ) -> SubmissionRecord:
        """Note a submit that started work; the same key, prompt and parameters seen before is a repeat.
        The record is returned so the frame can mark how its answer went."""
        fingerprint = json.dumps({"prompt": prompt, **params}, sort_keys=True, default=str)
        identity = (provider, key_id(key), fingerprint)
        self._fingerprints[identity] += 1
        if self._fingerprints[identity] > 1:
            self.repeats.append(RepeatedSubmission(t, key_id(key), provider, prompt, self._fingerprints[identity]))
        record = SubmissionRecord(t, key_id(key), provider, prompt, list(task_ids))
        self.submissions.append(record)
        return record

    def as_json(self) -> dict[str, Any]:
        """The record as ``GET /_sandbox/stats`` answers it: ``requests`` (each with the status the client
        saw, 502 for a gateway page), counts ``by_key`` and ``by_kind``, ``rate_limited``,
        ``repeated_submissions``; ``submissions``, every submit that started work with its task ids and
        ``answer``; ``answers``, how many of those went each way (``normal``, ``gateway``,
        ``held_back``): the paid submits a client could not have known about are the last two; and
        ``tasks``, every task started with its ``done_at`` and the time of each poll that asked about it."""
        by_key: dict[str, Counter[str]] = {}
        for r in self.requests:
            if r.key_id is not None:
                by_key.setdefault(r.key_id, Counter())[r.kind] += 1
        return {
            "requests": [asdict(r) for r in self.requests],
            "by_key": {k: dict(counts) for k, counts in by_key.items()},
            "by_kind": dict(Counter(r.kind for r in self.requests)),
            "rate_limited": sum(1 for r in self.requests if r.status == 429),
            "repeated_submissions": {"count": len(self.repeats), "items": [asdict(r) for r in self.repeats]},
            "submissions": [asdict(s) for s in self.submissions],
            "answers": {answer: sum(1 for s in self.submissions if s.answer == answer) for answer in get_args(Answer)},
            "tasks": [asdict(t) for t in self.tasks.values()],
        }
