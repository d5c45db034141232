"""The engine, sessions and migrations, for SQLite and PostgreSQL alike.

SQLite runs in WAL mode with a busy timeout, so a worker and the CLI can write side by side.
Migrations run under a lock (a file lock beside a SQLite file, an advisory lock on PostgreSQL) so
several processes starting at once apply them exactly once.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_ID = 0x67656E71  # "genq"
RECORD_PATIENCE = 60.0
"""Seconds a write that records something paid for waits for the database to come back."""

log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def upsert_insert(session: Session) -> Callable[..., Any]:
    """The dialect's ``insert``, which has ``on_conflict_do_update`` on both SQLite and PostgreSQL."""
    bind = session.get_bind()
    return sqlite_insert if bind.dialect.name == "sqlite" else postgresql_insert


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back when it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def while_the_database_is_back(write: Callable[[], Any], *, patience: float = RECORD_PATIENCE) -> Any:
    """Run ``write``, and run it again while the database is unreachable (a restart, a failover),
    for up to ``patience`` seconds.

    For the writes that record what a provider answered to a paid call: lost, the answer is gone,
    and the job with it. ``write`` must be a whole transaction of its own, safe to run again.
    """
    deadline = time.monotonic() + patience
    pause = 0.25
    while True:
        try:
            return write()
        except (OperationalError, DBAPIError) as error:
            if not (isinstance(error, OperationalError) or error.connection_invalidated):
                raise
            if time.monotonic() + pause > deadline:
                raise
            log.warning("the database did not answer (%s); writing again in %.1f s", type(error.orig).__name__, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call from every process at start."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with _migration_lock(engine), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if is_sqlite(engine):
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
            connection.commit()
