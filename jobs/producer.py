"""A checked batch file into rows: one Batch and one Job per generation, in one transaction.

The same file (by content hash) is the same batch: submitting it again returns the batch already
there, so a re-run resumes rather than pays twice. ``force`` makes a new batch of it all the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.lifecycle import JobState, UncertainPolicy
from jobs.models import Batch, Job
from jobs.spec import BatchSpec

_INSERT_CHUNK = 5_000


@dataclass(frozen=True)
class Produced:
    batch: Batch
    created: bool
    """False when the same file was already a batch and that one is returned."""


def produce(
    engine: Engine,
    spec: BatchSpec,
    *,
    force: bool = False,
    on_uncertain: str | None = None,
    budget: int | None = None,
) -> Produced:
    """``on_uncertain`` and ``budget`` (from the command line) win over the file's; given for a
    batch already there, they change that batch's from now on (a budget is raised this way too)."""
    if not force:
        existing = _existing(engine, spec.content_hash)
        if existing is not None:
            return Produced(_with_changes(engine, existing, on_uncertain, budget), created=False)
    policy = on_uncertain or spec.on_uncertain or UncertainPolicy.FAIL.value
    cap = budget if budget is not None else spec.budget
    try:
        with session_scope(engine) as session:
            batch = _insert(session, spec, dedupe_key=None if force else spec.content_hash, on_uncertain=policy,
                            budget=cap)  # fmt: skip
    except IntegrityError:
        existing = _existing(engine, spec.content_hash)
        if existing is None:
            raise
        return Produced(_with_changes(engine, existing, on_uncertain, budget), created=False)
    return Produced(batch, created=True)


def _with_changes(engine: Engine, batch: Batch, on_uncertain: str | None, budget: int | None) -> Batch:
    changes: dict[str, object] = {}
    if on_uncertain is not None and on_uncertain != batch.on_uncertain:
        changes["on_uncertain"] = on_uncertain
    if budget is not None and budget != batch.budget:
        changes["budget"] = budget
    if not changes:
        return batch
    with session_scope(engine) as session:
        session.execute(update(Batch).where(col(Batch.id) == batch.id).values(**changes))
    return batch.model_copy(update=changes)


def _existing(engine: Engine, content_hash: str) -> Batch | None:
    with Session(engine) as session:
        return session.exec(select(Batch).where(col(Batch.dedupe_key) == content_hash)).first()


def _insert(
    session: Session, spec: BatchSpec, *, dedupe_key: str | None, on_uncertain: str, budget: int | None
) -> Batch:
    batch = Batch(
        on_uncertain=on_uncertain,
        budget=budget,
        name=spec.name,
        source=spec.source,
        content_hash=spec.content_hash,
        dedupe_key=dedupe_key,
        priority=spec.priority,
        job_count=len(spec.jobs),
        options={"sheets": spec.sheets.model_dump()},
    )
    session.add(batch)
    session.flush()
    assert batch.id is not None
    rows = [
        {
            "batch_id": batch.id,
            "seq": seq,
            "line": line,
            "name": job.name,
            "provider": job.provider,
            "account": job.account,
            "pinned_account": job.account,
            "priority": spec.priority,
            "spec": job.model_dump(mode="json", exclude_defaults=True),
            "state": JobState.PENDING.value,
        }
        for seq, (job, line) in enumerate(zip(spec.jobs, spec.lines, strict=True), start=1)
    ]
    for start in range(0, len(rows), _INSERT_CHUNK):
        session.execute(insert(Job), rows[start : start + _INSERT_CHUNK])
    return batch
