"""The vocabulary of states: a job's, a provider task's, a batch's, and the policy for lost answers.

A bottom-floor module (it imports nothing of genq), so the tables, the state machine and every
worker step speak the same words; the database stores their values.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    SUBMITTING = "submitting"
    RUNNING = "running"
    COLLECTING = "collecting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    UNCERTAIN = "uncertain"


class TaskState(StrEnum):
    """A provider task: running until a poll (or the reconciler) finds it ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BatchState(StrEnum):
    """A batch runs until every job is final; then it succeeded (every job did), failed, or was
    canceled (``genq cancel``: its results are written all the same)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class Cancel(StrEnum):
    """What ``genq cancel`` ended of a batch."""

    WAITING = "waiting"
    """Its pending and queued jobs; what runs at the provider is still polled and collected (it is paid)."""
    RUNNING = "running"
    """Those, and its running provider tasks too: no longer polled, deleted at the provider where it can."""


PAUSED_BY_HAND = "paused by hand"
BUDGET_REACHED = "budget reached"
"""A batch's ``paused_reason`` when admission found its next job would take it past its budget."""


class UncertainPolicy(StrEnum):
    """What becomes of a job whose submit answer was lost and that the provider cannot account for."""

    FAIL = "fail"
    """Fail it with the cause: never pay twice (the default)."""
    RESUBMIT = "resubmit"
    """Send it again: a picture may be paid twice, but none is missing."""
