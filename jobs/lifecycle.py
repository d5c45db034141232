"""The job state machine (the states themselves are in ``jobs.states``).

Every move is a compare-and-set, so a duplicated message moves nothing.

pending -> queued -> submitting -> running -> collecting -> succeeded
   |          |           |            |            |
   +----------+-----------+------------+------------+--> failed / canceled
                          +-> uncertain (the answer to a paid call was lost)
                                  +-> running / collecting (adopted), pending (resubmitted), failed
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Table, Update, bindparam, update
from sqlmodel import Session

from jobs.db import Executor
from jobs.errors import IllegalTransition
from jobs.models import Job, utcnow
from jobs.states import BatchState, JobState, TaskState, UncertainPolicy

__all__ = ["ALLOWED", "FINAL", "IN_FLIGHT", "BatchState", "IllegalTransition", "JobState", "TaskState",
           "UncertainPolicy", "move", "move_all"]  # fmt: skip


FINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})
IN_FLIGHT: frozenset[JobState] = frozenset({JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING, JobState.UNCERTAIN})
"""States in which a job holds a place of its account's in-flight cap."""

JOBS: Table = Job.__table__  # type: ignore[attr-defined]
"""The jobs table itself. Moves are written to it as plain SQL statements, not through the ORM's
bulk update, which would also look for the rows among the session's objects to bring them up to
date: no caller keeps one across a move, and that search costs a third of a move's time."""

_ENDS = {JobState.FAILED, JobState.CANCELED}
ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.QUEUED, *_ENDS}),
    JobState.QUEUED: frozenset({JobState.SUBMITTING, JobState.PENDING, *_ENDS}),
    JobState.SUBMITTING: frozenset(
        {JobState.RUNNING, JobState.COLLECTING, JobState.QUEUED, JobState.PENDING, JobState.UNCERTAIN, *_ENDS}
    ),
    JobState.RUNNING: frozenset({JobState.COLLECTING, *_ENDS}),
    JobState.COLLECTING: frozenset({JobState.SUCCEEDED, *_ENDS}),
    JobState.UNCERTAIN: frozenset({JobState.RUNNING, JobState.COLLECTING, JobState.PENDING, *_ENDS}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
}


def move(session: Executor, job_id: int, source: JobState, target: JobState, **values: Any) -> bool:
    """Move a job from ``source`` to ``target`` if it is still in ``source``; say whether it moved.

    The caller commits; ``values`` are written in the same statement (``error``, ``account``...).
    """
    if target not in ALLOWED[source]:
        raise IllegalTransition(f"{source} -> {target}")
    written = {"state": target.value, "updated_at": utcnow(), **values}
    parameters = {f"set_{name}": value for name, value in written.items()}
    parameters |= {"where_id": job_id, "where_state": source.value}
    result = session.execute(_move_statement(tuple(written)), parameters)
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


@lru_cache(maxsize=128)
def _move_statement(columns: tuple[str, ...]) -> Update:
    """The compare-and-set that writes these columns, built once for each set of them and given its
    values as parameters: a move runs several times for every job, and building the statement
    again each time (and its cache key) costs as much as running it. Parameters are named apart
    from the columns (``set_state``, ``where_id``), as SQLAlchemy keeps a column's own name for itself."""
    return (
        update(JOBS)
        .where(JOBS.c.id == bindparam("where_id"), JOBS.c.state == bindparam("where_state"))
        .values({name: bindparam(f"set_{name}") for name in columns})
    )


def move_all(
    session: Session, where: Iterable[ColumnElement[bool]], sources: Iterable[JobState], target: JobState, **values: Any
) -> list[int]:
    """Move every job matching ``where`` that is in one of ``sources`` to ``target``; the ids moved.

    The bulk form of ``move`` for a person's command over a whole batch (cancel, pause): each row
    moves only from a state it is still in, so a job a worker moved meanwhile is left to the worker.
    """
    sources = list(sources)
    for source in sources:
        if target not in ALLOWED[source]:
            raise IllegalTransition(f"{source} -> {target}")
    result = session.execute(
        update(JOBS)
        .where(*where, JOBS.c.state.in_([source.value for source in sources]))
        .values(state=target.value, updated_at=utcnow(), **values)
        .returning(JOBS.c.id)
    )
    return [row[0] for row in result]
