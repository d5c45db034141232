"""SQLite's one writer: a worker's threads writing side by side queue on one lock per database file
(``jobs.db.OneWriterConnection``) instead of sleeping in SQLite's busy handler, and a write that
failed or committed holds nothing afterwards."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

import jobs.db
from jobs.db import make_engine, migrate, session_scope
from jobs.errors import DatabaseError
from jobs.models import Asset, Batch, Job


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'genq.db'}")
    migrate(engine)
    return engine


def a_job(engine: Engine) -> int:
    with session_scope(engine) as session:
        batch = Batch(name="w", source="w.csv", content_hash="w", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider="gencraft", spec={"prompt": "p"})
        session.add(job)
        session.flush()
        assert job.id is not None
        return job.id


def an_asset(job_id: int, index: int) -> Asset:
    return Asset(job_id=job_id, index=index, key=f"k{index}", sha256="0" * 64, bytes=1, width=1, height=1,
                 content_type="image/png")  # fmt: skip


def test_threads_writing_side_by_side_all_commit(sqlite_engine: Engine):
    job_id = a_job(sqlite_engine)
    errors: list[BaseException] = []

    def write(first: int) -> None:
        try:
            for index in range(first, first + 25):
                with session_scope(sqlite_engine) as session:
                    session.add(an_asset(job_id, index))
        except BaseException as error:  # reported below, in the test's own thread
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n * 100,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Session(sqlite_engine) as session:
        assert session.exec(select(func.count()).select_from(Asset).where(col(Asset.job_id) == job_id)).one() == 200


@pytest.mark.parametrize("failure", ["a duplicate key", "no such table"])
def test_a_write_that_failed_holds_nothing(sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch, failure: str):
    # A lock left held would make the next write wait this long and fail as "database is locked".
    monkeypatch.setattr(jobs.db, "SQLITE_BUSY_SECONDS", 0.5)
    job_id = a_job(sqlite_engine)
    with session_scope(sqlite_engine) as session:
        session.add(an_asset(job_id, 0))
    expected = IntegrityError if failure == "a duplicate key" else DatabaseError
    with pytest.raises(expected), session_scope(sqlite_engine) as session:
        if failure == "a duplicate key":
            session.add(an_asset(job_id, 0))
            session.flush()
        else:
            session.execute(text("INSERT INTO no_such_table VALUES (1)"))

    written = threading.Event()

    def write_elsewhere() -> None:
        with session_scope(sqlite_engine) as session:
            session.add(an_asset(job_id, 1))
        written.set()

    thread = threading.Thread(target=write_elsewhere)
    thread.start()
    thread.join()
    assert written.is_set()


def test_a_write_in_autocommit_mode_holds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(jobs.db, "SQLITE_BUSY_SECONDS", 0.5)
    path = str(tmp_path / "plain.db")
    first = sqlite3.connect(path, factory=jobs.db.OneWriterConnection, isolation_level=None)
    second = sqlite3.connect(path, factory=jobs.db.OneWriterConnection, isolation_level=None)
    try:
        first.cursor().execute("CREATE TABLE t (x INTEGER)")
        first.cursor().execute("INSERT INTO t VALUES (1)")
        second.cursor().execute("INSERT INTO t VALUES (2)")  # would wait out the lock and fail, were it held
        assert second.cursor().execute("SELECT count(*) FROM t").fetchone() == (2,)
    finally:
        first.close()
        second.close()
