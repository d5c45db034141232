"""What a batch looks like now, for ``genq status``, ``genq run``'s progress bars, and tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, func
from sqlmodel import Session, col, select

from jobs.control import batch_credits
from jobs.errors import NotFound
from jobs.lifecycle import FINAL, BatchState, JobState
from jobs.models import Asset, Batch, Job

LOST_ANSWER_COUNTS = ("uncertain", "adopted", "resubmitted")


@dataclass(frozen=True)
class BatchStatus:
    id: int
    name: str
    source: str
    state: str
    priority: int
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    """Jobs per state; every state is present, zero or not."""
    images: int = 0
    created_at: datetime | None = None
    finished_at: datetime | None = None
    manifest_key: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    """The first few failed jobs: line, name and reason."""
    failure_reasons: list[dict[str, Any]] = field(default_factory=list)
    """Every reason jobs failed for, with how many failed for it, most first."""
    on_uncertain: str = "fail"
    lost_answers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOST_ANSWER_COUNTS, 0))
    """Jobs whose submit answer was lost (``uncertain``), of those found at the provider and taken
    as theirs (``adopted``), and sent again under ``on_uncertain: resubmit`` (``resubmitted``)."""
    paused_reason: str | None = None
    """Why nothing more of it is sent (``paused by hand``, ``budget reached``); None while it runs."""
    canceled: str | None = None
    spent: int = 0
    """Credits its sent jobs cost (the provider's figure where it gives one, else the price)."""
    budget: int | None = None

    @property
    def paused(self) -> bool:
        return self.paused_reason is not None and not self.final

    @property
    def done(self) -> int:
        return sum(self.counts[state.value] for state in FINAL)

    @property
    def final(self) -> bool:
        return self.state != BatchState.RUNNING

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat() if self.created_at else None
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return data


def batch_status(engine: Engine, batch_id: int, *, error_limit: int = 10) -> BatchStatus:
    with Session(engine) as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"no batch {batch_id}")
        rows = session.exec(
            select(Job.state, func.count()).where(col(Job.batch_id) == batch_id).group_by(col(Job.state))
        ).all()
        images = session.exec(
            select(func.count())
            .select_from(Asset)
            .join(Job, col(Job.id) == col(Asset.job_id))
            .where(col(Job.batch_id) == batch_id)
        ).one()
        lost = session.exec(
            select(
                func.count(case((col(Job.lost_answers) > 0, 1))),
                func.count(case((col(Job.adopted).is_not(None), 1))),
                func.count(case((col(Job.resubmits) > 0, 1))),
            ).where(col(Job.batch_id) == batch_id)
        ).one()
        failed = session.exec(
            select(Job.seq, Job.line, Job.name, Job.error)
            .where(col(Job.batch_id) == batch_id, col(Job.state) == JobState.FAILED.value)
            .order_by(col(Job.seq))
            .limit(error_limit)
        ).all()
        reasons = session.exec(
            select(Job.error, func.count())
            .where(col(Job.batch_id) == batch_id, col(Job.state) == JobState.FAILED.value)
            .group_by(col(Job.error))
            .order_by(func.count().desc(), col(Job.error))
        ).all()
        spent = batch_credits(session, [batch_id], sent_only=True).get(batch_id, 0)
    counts = {state.value: 0 for state in JobState}
    counts.update({state: count for state, count in rows})
    assert batch.id is not None
    return BatchStatus(
        id=batch.id,
        name=batch.name,
        source=batch.source,
        state=batch.state,
        priority=batch.priority,
        total=batch.job_count,
        counts=counts,
        images=images,
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        manifest_key=batch.manifest_key,
        errors=[{"job": seq, "line": line, "name": name, "error": error} for seq, line, name, error in failed],
        failure_reasons=[{"reason": reason or "", "jobs": count} for reason, count in reasons],
        on_uncertain=batch.on_uncertain,
        lost_answers=dict(zip(LOST_ANSWER_COUNTS, lost, strict=True)),
        paused_reason=batch.paused_reason,
        canceled=batch.canceled,
        spent=spent,
        budget=batch.budget,
    )


def recent_batches(engine: Engine, limit: int = 20) -> list[BatchStatus]:
    with Session(engine) as session:
        ids = session.exec(select(Batch.id).order_by(col(Batch.id).desc()).limit(limit)).all()
    return [batch_status(engine, batch_id) for batch_id in ids if batch_id is not None]
