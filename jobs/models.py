"""The tables: a batch, its jobs, the provider tasks a job started, and the images it produced.

Timestamps are aware UTC datetimes (``utcnow``); SQLModel stores them as UTC on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from jobs.states import BatchState, JobState, TaskState


def utcnow() -> datetime:
    return datetime.now(UTC)


class Batch(SQLModel, table=True):
    __tablename__ = "batches"

    id: int | None = Field(default=None, primary_key=True)
    name: str
    source: str
    """The file it came from, as the person named it."""
    content_hash: str = Field(index=True)
    dedupe_key: str | None = Field(default=None, unique=True)
    """The content hash, unless the batch was forced in again; a second copy of a file finds the first."""
    priority: int = 0
    state: str = Field(default=BatchState.RUNNING.value, index=True)
    on_uncertain: str = "fail"
    """What becomes of a job whose lost answer the provider cannot account for: ``UncertainPolicy``."""
    job_count: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    manifest_key: str | None = None
    """The batch's ``results.jsonl``, written when it ended."""
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}"))
    """Settings of the batch as a whole: ``sheets`` (padding, trim)."""
    budget: int | None = None
    """Credits the batch may spend at most (jobs in flight counted); None: no cap."""
    paused_reason: str | None = None
    """Why nothing more of the batch is sent (``genq pause``, or ``BUDGET_REACHED``); None: not paused."""
    canceled: str | None = None
    """``Cancel`` value once the batch was canceled: what waits (``waiting``), or what runs too (``running``)."""


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_admission", "state", "provider", "priority", "id"),
        Index("ix_jobs_batch_pending", "batch_id", "state", "provider", "id"),
        Index("ix_jobs_state_updated", "state", "updated_at"),
        Index("uq_jobs_account_adopted", "account", "adopted", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="batches.id")
    seq: int
    """The job's place in its batch, from 1."""
    line: int
    """The line of the batch file it came from."""
    name: str | None = None
    provider: str
    account: str | None = Field(default=None, index=True)
    """The account chosen by admission (or pinned by the batch file)."""
    pinned_account: str | None = None
    priority: int = 0
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    state: str = Field(default=JobState.PENDING.value)
    attempts: int = 0
    """Submissions sent that failed transiently."""
    error: str | None = None
    holder: str | None = None
    """The worker process that holds the job while it submits or collects (``workers.liveness``)."""
    lease_until: datetime | None = None
    """Until when the holder's step may take (a submit's call time-out and a margin); the reconciler
    leaves the job alone before then unless the holder is known dead."""
    sent_at: datetime | None = None
    """When its latest submit left: where to look for it at the provider if its answer is lost."""
    lost_answers: int = 0
    """Submits of this job whose answer was lost."""
    adopted: str | None = None
    """The provider's id of a lost submit found at the provider and taken as this job's."""
    rotations: int = 0
    """Times an account refused it for its key or its balance, and it went back for another."""
    resubmits: int = 0
    """Times it was sent again after a lost answer, under ``on_uncertain: resubmit``."""
    credits: int | None = None
    """Credits the job holds of its batch's and its account's caps: its price from the moment it is
    claimed, what the provider said it charged once it answers, 0 when nothing was started; None
    while it waits."""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ProviderTask(SQLModel, table=True):
    """One task at a provider; a single submit may start several (gencraft ``count``, a sprite batch)."""

    __tablename__ = "provider_tasks"
    __table_args__ = (Index("ix_provider_tasks_due", "state", "next_poll_at"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", index=True)
    index: int
    account: str
    provider: str
    remote_id: str
    """The provider's own task id."""
    state: str = TaskState.RUNNING.value
    images: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Where the finished pictures are: ``{"url": ...}`` for each, filled when the task completes."""
    error: str | None = None
    polls: int = 0
    poll_errors: int = 0
    """Polls in a row whose answer could not be read."""
    submitted_at: datetime = Field(default_factory=utcnow)
    next_poll_at: datetime = Field(default_factory=utcnow)
    poll_due_at: datetime | None = None
    """When the next poll is due by its schedule: ``next_poll_at`` before a sweep's lease or a wait for
    the key's allowance moved it. What a poll finds is learned as of this moment, not of when it ran."""
    last_polled_at: datetime | None = None
    """When a poll last found the task still running; None until one did."""
    finished_at: datetime | None = None


RATE_LIMITED = "rate limited"
"""The event of a request of the job's turned away with a 429; its detail names the account and the kind."""


class JobEvent(SQLModel, table=True):
    """A line of a job's history worth keeping: a lost answer, what the provider said of it, a resubmit."""

    __tablename__ = "job_events"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", index=True)
    at: datetime = Field(default_factory=utcnow)
    event: str
    detail: str = ""


class Asset(SQLModel, table=True):
    """A picture copied into our own storage."""

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("job_id", "index", name="uq_assets_job_index"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", index=True)
    index: int
    key: str
    sha256: str
    bytes: int
    width: int
    height: int
    content_type: str
    created_at: datetime = Field(default_factory=utcnow)


class AccountPause(SQLModel, table=True):
    """An account taken out of rotation by hand (``genq account pause``): admission sends it nothing
    until ``until`` (or until ``genq account resume`` when None); its running tasks are still polled."""

    __tablename__ = "account_pauses"

    account: str = Field(primary_key=True)
    until: datetime | None = None
    reason: str = ""
    paused_at: datetime = Field(default_factory=utcnow)


class AccountBalance(SQLModel, table=True):
    """The credits a provider last said an account has left (girlgenerator answers it on each submit).

    The provider's own balance is shared with its web site, so this is what it said, when it said it.
    """

    __tablename__ = "account_balances"

    account: str = Field(primary_key=True)
    provider: str
    credits_remaining: float
    updated_at: datetime = Field(default_factory=utcnow)
