"""The engine, sessions and migrations, for SQLite and PostgreSQL alike.

SQLite runs in WAL mode with a busy timeout, so a worker and the CLI can write side by side.
Migrations run under a lock (a file lock beside a SQLite file, an advisory lock on PostgreSQL) so
several processes starting at once apply them exactly once.

SQLAlchemy's errors become genq's here, by ``database_error``, wherever genq opens a unit of work
(``session_scope``, ``migrate``, ``while_the_database_is_back``): ``DatabaseUnavailable`` when the
database did not answer, ``DatabaseError`` when it refused a statement. Two kinds are left as they
are: ``IntegrityError``, which is the database's answer to a claim on a unique index (a batch's
content hash, an adopted submission, a recorded picture) that callers take inside their transaction,
and SQLAlchemy's own complaints about how it was called (``ArgumentError``, ``InvalidRequestError``,
``CompileError``...), which are bugs and are shown as what they are.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from jobs.errors import ConfigError, DatabaseError, DatabaseUnavailable

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_ID = 0x67656E71  # "genq"
RECORD_PATIENCE = 60.0
"""Seconds a write that records something paid for waits for the database to come back."""

log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    """The engine for ``url`` (``GENQ_DATABASE_URL``); a URL SQLAlchemy cannot take is a ``ConfigError``."""
    try:
        return _engine(url)
    except ArgumentError as error:  # a malformed URL, an unknown dialect or driver
        raise ConfigError(f"GENQ_DATABASE_URL cannot be used: {_first_line(error)}") from None


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False, "factory": OneWriterConnection},
            pool_size=10,
            max_overflow=10,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


SQLITE_BUSY_SECONDS = 30.0
"""How long a write waits for SQLite's one writer to finish, in this process and across processes."""
_WRITE_STATEMENTS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


class OneWriterConnection(sqlite3.Connection):
    """A SQLite connection whose writes queue on a lock shared by the process's connections to the
    same file, held from a transaction's first write to its commit or rollback.

    SQLite lets one writer in at a time; a writer that finds the file locked sleeps in SQLite's busy
    handler (1, 2, 5, 10, ... 100 ms) and tries again, so a worker's threads writing side by side
    spend most of their time asleep. Queued on a lock, each write starts the moment the one before it
    ends. Other processes (the CLI, another worker) still meet SQLite's own lock, as before; the wait
    for this lock is as long as SQLite's, and ends the same way (``database is locked``).
    """

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        with _write_locks_guard:
            self._write_lock = _write_locks.setdefault(str(database), threading.Lock())
        self._writing = False

    def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
        return super().cursor(factory or _OneWriterCursor)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._done_writing()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._done_writing()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._done_writing()

    def _start_writing(self, statement: str) -> None:
        if self._writing or not statement.lstrip()[:7].upper().startswith(_WRITE_STATEMENTS):
            return
        if not self._write_lock.acquire(timeout=SQLITE_BUSY_SECONDS):
            raise sqlite3.OperationalError("database is locked")
        self._writing = True

    def _done_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._write_lock.release()

    def _wrote(self) -> None:
        """A write that left no transaction open (autocommit, or it failed before one began) holds nothing."""
        if self._writing and not self.in_transaction:
            self._done_writing()


class _OneWriterCursor(sqlite3.Cursor):
    connection: OneWriterConnection

    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        self.connection._start_writing(sql)
        try:
            return super().execute(sql, parameters)
        finally:
            self.connection._wrote()

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Self:
        self.connection._start_writing(sql)
        try:
            return super().executemany(sql, seq_of_parameters)
        finally:
            self.connection._wrote()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


Executor = Session | Connection
"""Where a statement runs: a session, or a plain connection in a transaction (``transaction``)."""


def upsert_insert(executor: Executor) -> Callable[..., Any]:
    """The dialect's ``insert``, which has ``on_conflict_do_update`` on both SQLite and PostgreSQL."""
    return sqlite_insert if is_sqlite(bind_of(executor)) else postgresql_insert


def bind_of(executor: Executor) -> Engine | Connection:
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    assert isinstance(bind, Engine | Connection)
    return bind


UNAVAILABLE: tuple[type[SQLAlchemyError], ...] = (OperationalError, DisconnectionError, PoolTimeout)
"""Failures of the database rather than of a statement: it is restarting, failing over, out of
connections or busy (SQLite's lock), or the pool has no connection to spare. Waiting can help."""


def database_error(error: SQLAlchemyError) -> DatabaseError | None:
    """``error`` as genq's, or None for one left as it is (see the module's docstring).

    A DBAPI error that cost its connection (SQLAlchemy marks it ``connection_invalidated``) is the
    database gone too, whatever its class. The message keeps the driver's first line, never the
    statement or its parameters.
    """
    if isinstance(error, IntegrityError):
        return None
    invalidated = isinstance(error, DBAPIError) and error.connection_invalidated
    if isinstance(error, UNAVAILABLE) or invalidated:
        return DatabaseUnavailable(f"the database did not answer: {_why(error)}")
    if isinstance(error, DBAPIError):
        return DatabaseError(f"the database refused a statement: {_why(error)}")
    return None


@contextmanager
def database_calls() -> Iterator[None]:
    """Raise what ``database_error`` translates from the block as genq's, from the original."""
    try:
        yield
    except SQLAlchemyError as error:
        translated = database_error(error)
        if translated is None:
            raise
        raise translated from error


def _why(error: SQLAlchemyError) -> str:
    """The driver's class and first line (a DBAPI error's own text repeats the SQL and its values)."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    return f"{type(cause).__name__}: {_first_line(cause)}"


def _first_line(error: BaseException) -> str:
    return next(iter(str(error).strip().splitlines()), "")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back when it raises; SQLAlchemy's errors
    leave it translated (``database_error``)."""
    with database_calls(), Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that commits when the block ends and rolls back when it raises,
    errors translated as ``session_scope``'s. For the writes made once for every job (a claim, a
    record, a move), which run plain statements only: a transaction on a connection costs the
    worker about half what the same one through a ``Session`` does."""
    with database_calls(), engine.begin() as connection:
        yield connection


def while_the_database_is_back(write: Callable[[], Any], *, patience: float = RECORD_PATIENCE) -> Any:
    """Run ``write``, and run it again while the database is unreachable (a restart, a failover),
    for up to ``patience`` seconds.

    For the writes that record what a provider answered to a paid call: lost, the answer is gone,
    and the job with it. ``write`` must be a whole transaction of its own, safe to run again (a
    compare-and-set whose commit was not acknowledged finds its own row the second time). Only
    ``DatabaseUnavailable`` is waited for; once ``patience`` is spent, it is raised.
    """
    deadline = time.monotonic() + patience
    pause = 0.25
    while True:
        try:
            with database_calls():
                return write()
        except DatabaseUnavailable as error:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s; writing again in %.1f s", error, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call from every process at start."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with database_calls(), _migration_lock(engine), engine.begin() as connection:
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
