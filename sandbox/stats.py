"""What the sandbox saw: every request, and every submit that repeated an earlier one.

Tests and benchmarks judge a client by this record, the way a provider's bill would: how many
requests each key sent of each kind, how many were turned away for the rate limit, and how many
paid submits were sent twice. Keys appear only as ``key_id`` (a short hash), never in the clear.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

Kind = Literal["submit", "poll", "poll_many", "upload", "history", "status", "download"]


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


class Stats:
    def __init__(self) -> None:
        self.requests: list[RequestRecord] = []
        self.repeats: list[RepeatedSubmission] = []
        self._submissions: Counter[tuple[str, str, str]] = Counter()

    def record(self, t: float, key: str | None, provider: str, kind: Kind, status: int) -> None:
        self.requests.append(RequestRecord(t, None if key is None else key_id(key), provider, kind, status))

    def submission(self, t: float, key: str, provider: str, prompt: str, params: Mapping[str, Any]) -> None:
        """Note a submit that started work; the same key, prompt and parameters seen before is a repeat."""
        fingerprint = json.dumps({"prompt": prompt, **params}, sort_keys=True, default=str)
        identity = (provider, key_id(key), fingerprint)
        self._submissions[identity] += 1
        if self._submissions[identity] > 1:
            self.repeats.append(RepeatedSubmission(t, key_id(key), provider, prompt, self._submissions[identity]))

    def as_json(self) -> dict[str, Any]:
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
        }
