"""A checked batch file into rows: one Batch and one Job per generation, in one transaction.

The same file (by content hash) is the same batch: submitting it again returns the batch already
there, so a re-run resumes rather than pays twice. ``force`` makes a new batch of it all the same.

The jobs are taken one at a time (``BatchRows.rows``) and written a chunk at a time with plain
multi-row inserts, no ORM object a job, so a batch streamed from its file is never held whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Dialect, Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.lifecycle import JobState, UncertainPolicy
from jobs.models import Batch, Job, utcnow
from jobs.spec import BatchRows

_INSERT_CHUNK = 5_000


@dataclass(frozen=True)
class Produced:
    batch: Batch
    created: bool
    """False when the same file was already a batch and that one is returned."""


def produce(
    engine: Engine,
    spec: BatchRows,
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
    session: Session, spec: BatchRows, *, dedupe_key: str | None, on_uncertain: str, budget: int | None
) -> Batch:
    batch = Batch(
        on_uncertain=on_uncertain,
        budget=budget,
        name=spec.name,
        source=spec.source,
        content_hash=spec.content_hash,
        dedupe_key=dedupe_key,
        priority=spec.priority,
        job_count=spec.job_count,
        options={"sheets": spec.sheets.model_dump()},
    )
    session.add(batch)
    session.flush()
    assert batch.id is not None
    writer = _JobWriter(session.connection())
    constant = {"batch_id": batch.id, "priority": spec.priority, "state": JobState.PENDING.value}
    chunk: list[dict[str, Any]] = []
    for seq, (job, line) in enumerate(spec.rows(), start=1):
        chunk.append(
            constant
            | {
                "seq": seq,
                "line": line,
                "name": job.name,
                "provider": job.provider,
                "account": job.account,
                "pinned_account": job.account,
                "spec": job.model_dump_json(exclude_defaults=True),
            }
        )
        if len(chunk) == _INSERT_CHUNK:
            writer.write(chunk)
            chunk = []
    if chunk:
        writer.write(chunk)
    return batch


class _JobWriter:
    """New jobs written a chunk at a time straight to the database driver (``executemany``), in the
    session's transaction: SQLAlchemy's per-row work (building ORM objects, processing each bound
    value) costs more than the insert itself for a batch of a million.

    The statement is SQLAlchemy's own for the dialect; the values of the columns every job shares
    (defaults, the timestamps) are processed once, and ``spec`` arrives as JSON text already. On
    PostgreSQL the rows go by ``COPY`` (psycopg's), a quarter faster there than an ``INSERT`` a row.
    """

    _GIVEN = ("batch_id", "seq", "line", "name", "provider", "account", "pinned_account", "priority", "spec", "state")

    def __init__(self, connection: Connection) -> None:
        table = Job.metadata.tables[Job.__tablename__]
        now = utcnow()
        shared: dict[str, Any] = {"created_at": now, "updated_at": now}
        for column in table.columns:
            if column.name not in self._GIVEN and column.name not in shared and column.default is not None:
                shared[column.name] = getattr(column.default, "arg", None)
        self.connection = connection
        compiled = insert(Job).inline().compile(dialect=connection.dialect, column_keys=[*self._GIVEN, *shared])
        self.sql = compiled.string
        self.order = compiled.positiontup
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name in self._GIVEN:
            processor = _processor(table.c[name], connection.dialect)
            if processor is not None and name != "spec":
                self.processors[name] = processor
        self.shared = {}
        for name, value in shared.items():
            processor = _processor(table.c[name], connection.dialect)
            self.shared[name] = processor(value) if processor is not None else value
        self.columns = (*self._GIVEN, *self.shared)
        self.copy: str | None = None
        if connection.dialect.name == "postgresql":
            self.copy = f"COPY {table.name} ({', '.join(self.columns)}) FROM STDIN"

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            for name, processor in self.processors.items():
                row[name] = processor(row[name])
            row.update(self.shared)
        if self.copy is not None:
            self._copy(self.copy, rows)
        elif self.order is None:
            self.connection.exec_driver_sql(self.sql, rows)  # type: ignore[arg-type]
        else:
            self.connection.exec_driver_sql(self.sql, [tuple(row[name] for name in self.order) for row in rows])

    def _copy(self, statement: str, rows: list[dict[str, Any]]) -> None:
        driver = self.connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(tuple(row[name] for name in self.columns))


def _processor(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a value of ``column`` before the driver sees it (a timestamp into
    SQLite's text form, say), or None when it passes as is."""
    return column.type.dialect_impl(dialect).bind_processor(dialect)
