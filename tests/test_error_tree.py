"""One exception tree: every error genq defines descends from ``GenqError``, at most three levels down,
and is drawn in ``jobs/errors.py``; every error class of httpx, redis, SQLAlchemy and obstore that genq
can meet is translated at its one boundary into a genq error (or left as it is, for a reason written
here).

Each walk lists the library's classes from the library itself, so a class added by a new version is
walked too and fails here until it is mapped or given a reason."""

from __future__ import annotations

import importlib
import pkgutil
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import obstore.exceptions
import psycopg
import pytest
import redis
import redis.exceptions
import sqlalchemy.exc
from sqlalchemy import text

import jobs
import jobs.storage
import workers
from jobs.db import database_error, make_engine, session_scope, while_the_database_is_back
from jobs.errors import (
    AnswerLost,
    BadCredentials,
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    DestinationRefused,
    GenqError,
    InvalidRequest,
    PictureRefused,
    ProviderError,
    RateLimited,
    RedisUnavailable,
    StorageError,
    Transient,
)
from jobs.rediscalls import talking_to_redis
from jobs.settings import Settings
from jobs.storage import Storage
from workers.collect import download
from workers.liveness import Heartbeat, dead_holders
from workers.providers.base import HTTP_ERRORS, NOT_SENT, decide, send
from workers.runtime import Runtime
from workers.submission import ROTATION_REASONS
from workers.timing import CompletionTimes


def classes_of(module: Any, root: type[BaseException] = Exception) -> list[type[BaseException]]:
    """The exception classes a module defines or exports, in a stable order."""
    names = getattr(module, "__all__", None) or list(vars(module))
    found = [getattr(module, name) for name in names]
    return sorted(
        {cls for cls in found if isinstance(cls, type) and issubclass(cls, root)},
        key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
    )


def name(cls: type) -> str:
    return cls.__qualname__


def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- genq's own tree -------------------------------------------------------------------------------


def project_exceptions() -> list[type[BaseException]]:
    found = []
    for package in (jobs, workers):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if ".migrations" in module.name:
                continue
            loaded = importlib.import_module(module.name)
            for value in vars(loaded).values():
                if (isinstance(value, type) and issubclass(value, BaseException)
                        and value.__module__.startswith(("jobs", "workers"))):  # fmt: skip
                    found.append(value)
    return sorted(set(found), key=lambda cls: cls.__qualname__)


PROJECT_ERRORS = [cls for cls in project_exceptions() if issubclass(cls, Exception)]
SIGNALS = [cls for cls in project_exceptions() if not issubclass(cls, Exception)]
"""Exceptions that stop a command as Ctrl-C does (``deployment.Stopped``, for SIGTERM and SIGHUP): not
errors, and deliberately out of reach of ``except Exception``, so no handler of an error swallows them."""


@pytest.mark.parametrize("cls", PROJECT_ERRORS, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_project_error_is_in_the_tree_at_most_three_levels_down(cls: type[BaseException]):
    assert issubclass(cls, GenqError)
    assert cls.__mro__.index(GenqError) <= 2


@pytest.mark.parametrize("cls", PROJECT_ERRORS, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_project_error_is_drawn_in_the_tree(cls: type[BaseException]):
    import jobs.errors

    drawn = cls is GenqError or f"── {cls.__name__}" in (jobs.errors.__doc__ or "")  # the root has no branch
    assert drawn, f"draw {cls.__name__} in the tree of jobs/errors.py"


@pytest.mark.parametrize("cls", SIGNALS, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_an_exception_outside_the_tree_is_a_signal_unwinding_like_ctrl_c(cls: type[BaseException]):
    assert issubclass(cls, KeyboardInterrupt)


# -- httpx: workers.providers.base.http_outcome, for provider calls and picture downloads -------------


URL = "http://provider.test/generate?key=secret"


def httpx_error(cls: type[Exception], request: httpx.Request) -> Exception:
    """An instance as httpx itself builds one: request errors carry their request, a status error its
    response too, a stream error takes no message."""
    if issubclass(cls, httpx.HTTPStatusError):
        return cls("500 from the provider", request=request, response=httpx.Response(500, request=request))
    if issubclass(cls, httpx.RequestError):
        return cls("boom", request=request)
    if cls in (httpx.StreamConsumed, httpx.StreamClosed, httpx.ResponseNotRead, httpx.RequestNotRead):
        return cls()
    return cls("boom")


def expected_outcome(cls: type[Exception], *, paid: bool) -> type[ProviderError]:
    """What genq makes of a failure, by when it came: refused before connecting, before the request
    left, or after (lost when the call is paid for)."""
    if issubclass(cls, DestinationRefused | httpx.InvalidURL):
        return InvalidRequest
    if issubclass(cls, NOT_SENT):
        return Transient
    return AnswerLost if paid else Transient


HTTPX_ERRORS = [*classes_of(httpx), DestinationRefused]


def test_the_httpx_walk_sees_every_family():
    assert {httpx.RequestError, httpx.HTTPStatusError, httpx.InvalidURL, httpx.StreamError, httpx.CookieConflict,
            httpx.DecodingError, httpx.StreamConsumed} <= set(HTTPX_ERRORS)  # fmt: skip
    assert all(issubclass(cls, HTTP_ERRORS) for cls in HTTPX_ERRORS)


@pytest.mark.parametrize("paid", [True, False], ids=["paid", "unpaid"])
@pytest.mark.parametrize("cls", HTTPX_ERRORS, ids=name)
def test_every_httpx_error_of_a_provider_call_becomes_a_provider_outcome(cls: type[Exception], paid: bool):
    def fail(request: httpx.Request) -> httpx.Response:
        if cls is DestinationRefused:
            raise DestinationRefused("provider.test", "is a private address")
        raise httpx_error(cls, request)

    client = httpx.Client(transport=httpx.MockTransport(fail))
    with pytest.raises(ProviderError) as raised:
        send(client, client.build_request("POST", URL), paid=paid)

    assert type(raised.value) is expected_outcome(cls, paid=paid)
    assert "secret" not in str(raised.value) and "/generate" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # httpx's text stays out


@pytest.mark.parametrize("cls", HTTPX_ERRORS, ids=name)
def test_every_httpx_error_of_a_picture_download_becomes_a_refusal(tmp_path: Path, cls: type[Exception]):
    def fail(request: httpx.Request) -> httpx.Response:
        if cls is DestinationRefused:
            raise DestinationRefused("cdn.test", "is a private address")
        raise httpx_error(cls, request)

    runtime = Runtime(Settings(var_dir=tmp_path))
    runtime.__dict__["http"] = httpx.Client(transport=httpx.MockTransport(fail))

    with pytest.raises(PictureRefused) as refused:
        download(runtime, "http://cdn.test/picture.png?signature=secret")
    runtime.close()

    assert refused.value.final is (expected_outcome(cls, paid=False) is InvalidRequest)
    assert "secret" not in str(refused.value)


def test_a_status_raised_by_raise_for_status_is_judged_like_an_answer():
    request = httpx.Request("POST", URL)
    answer = httpx.Response(429, headers={"retry-after": "7"}, request=request)
    limited = httpx.HTTPStatusError("429", request=request, response=answer)

    def fail(_request: httpx.Request) -> httpx.Response:
        raise limited

    client = httpx.Client(transport=httpx.MockTransport(fail))
    with pytest.raises(RateLimited) as raised:
        send(client, request, paid=True)
    assert raised.value.retry_after == 7


def test_a_subclass_of_an_httpx_error_is_described_as_its_parent():
    class SlowRead(httpx.ReadTimeout):
        pass

    def fail(request: httpx.Request) -> httpx.Response:
        raise SlowRead("boom", request=request)

    client = httpx.Client(transport=httpx.MockTransport(fail))
    with pytest.raises(AnswerLost, match="timed out waiting for the answer"):
        send(client, client.build_request("POST", URL), paid=True)


# -- redis: jobs.rediscalls.talking_to_redis --------------------------------------------------------

CLUSTER_ONLY = (redis.exceptions.RedisClusterException, redis.exceptions.IncorrectPolicyType)
"""Raised by ``redis.cluster.RedisCluster`` and its command parser only; genq's clients are
``redis.Redis``, which never raises them."""

REDIS_ERRORS = [cls for cls in classes_of(redis.exceptions) if not issubclass(cls, CLUSTER_ONLY)]


def test_the_redis_walk_sees_every_family():
    assert {redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError,
            redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError,
            redis.exceptions.ChildDeadlockedError} <= set(REDIS_ERRORS)  # fmt: skip


@pytest.mark.parametrize("cls", [*REDIS_ERRORS, ConnectionResetError, OSError], ids=name)
def test_every_redis_error_becomes_redis_unavailable(cls: type[Exception]):
    # A cluster's redirection is parsed from its reply, "<slot> <host:port>"; the rest take a message.
    original = cls("3999 127.0.0.1:6381" if issubclass(cls, redis.exceptions.AskError) else "boom")

    with pytest.raises(RedisUnavailable, match="while testing") as raised, talking_to_redis("while testing"):
        raise original

    assert raised.value.__cause__ is original


def test_what_does_without_redis_still_does_without_it():
    """Given a Redis that refuses connections, the heartbeat is skipped, the poll delay is the default,
    the embedded server is taken for not running, and the reconciler is told Redis cannot say."""
    client = redis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1, socket_timeout=1)

    Heartbeat(client).beat()
    assert CompletionTimes(client, default=7.0).first_poll_delay("gencraft", None) == 7.0
    with pytest.raises(RedisUnavailable):
        CompletionTimes(client, default=7.0).learned("gencraft", None)
    with pytest.raises(RedisUnavailable):
        dead_holders(client, {"host:1:2"})


# -- SQLAlchemy: jobs.db.database_error ---------------------------------------------------------------

SQLALCHEMY_DECISIONS: dict[type[Exception], type[GenqError] | str] = {
    sqlalchemy.exc.OperationalError: DatabaseUnavailable,
    sqlalchemy.exc.DisconnectionError: DatabaseUnavailable,
    sqlalchemy.exc.TimeoutError: DatabaseUnavailable,
    sqlalchemy.exc.DBAPIError: DatabaseError,
    sqlalchemy.exc.IntegrityError: "the database's answer to a claim on a unique index (a batch's content "
    "hash, an adopted submission, a recorded picture): callers take it inside their transaction",
    sqlalchemy.exc.StatementError: "raised before the statement reached the database (its parameters "
    "could not be bound): a bug in genq",
    sqlalchemy.exc.ArgumentError: "SQLAlchemy called wrongly, or a URL it cannot take (make_engine "
    "makes that a ConfigError): a bug otherwise",
    sqlalchemy.exc.InvalidRequestError: "an API used wrongly (a closed result, a session to roll back, "
    "no row where one was asserted): a bug in genq",
    sqlalchemy.exc.CompileError: "a statement the dialect cannot write: a bug in genq",
    sqlalchemy.exc.CircularDependencyError: "models that depend on each other: a bug in genq",
    sqlalchemy.exc.IdentifierError: "a name too long for the dialect: a bug in genq",
}
"""What becomes of each SQLAlchemy error, found through its MRO: a genq class, or why it is left as it
is. ``SQLAlchemyError`` itself is the base, never raised alone."""

DBAPI_MODULES = {"sqlite3": sqlite3, "psycopg": psycopg}
"""The drivers genq runs on; each raises PEP 249's classes, which SQLAlchemy wraps by name."""


def decision(cls: type[Exception]) -> type[GenqError] | str:
    for parent in cls.__mro__:
        if parent in SQLALCHEMY_DECISIONS:
            return SQLALCHEMY_DECISIONS[parent]
    raise AssertionError(f"{cls.__name__}: map it in jobs.db.database_error, or say here why it is left")


def sqlalchemy_error(cls: type[Exception], driver: str, *, invalidated: bool = False) -> Exception:
    """An instance as SQLAlchemy builds one: a DBAPI error by ``DBAPIError.instance`` around the
    driver's own exception of the same PEP 249 name; the others from their constructors."""
    dbapi = DBAPI_MODULES[driver]
    if issubclass(cls, sqlalchemy.exc.DBAPIError):
        pep249 = "Error" if cls is sqlalchemy.exc.DBAPIError else cls.__name__
        orig = getattr(dbapi, pep249)("server closed the connection unexpectedly\nmore detail")
        built = sqlalchemy.exc.DBAPIError.instance(
            "UPDATE jobs SET state = ?", ("secret",), orig, dbapi.Error, connection_invalidated=invalidated
        )
        assert type(built) is cls
        return built
    special: dict[type[Exception], Callable[[], Exception]] = {
        sqlalchemy.exc.StatementError: lambda: cls("boom", "SELECT 1", {}, ValueError("x")),
        sqlalchemy.exc.CircularDependencyError: lambda: cls("boom", set(), set()),
        sqlalchemy.exc.UnsupportedCompilationError: lambda: cls(object(), object),
        sqlalchemy.exc.NoReferencedTableError: lambda: cls("boom", "jobs"),
        sqlalchemy.exc.NoReferencedColumnError: lambda: cls("boom", "jobs", "id"),
    }
    return special.get(cls, lambda: cls("boom"))()


SQLALCHEMY_ERRORS = [cls for cls in classes_of(sqlalchemy.exc, sqlalchemy.exc.SQLAlchemyError)
                     if cls is not sqlalchemy.exc.SQLAlchemyError]  # fmt: skip


@pytest.mark.parametrize("driver", DBAPI_MODULES)
@pytest.mark.parametrize("cls", SQLALCHEMY_ERRORS, ids=name)
def test_every_sqlalchemy_error_is_translated_or_left_for_a_reason(cls: type[Exception], driver: str):
    error = sqlalchemy_error(cls, driver)
    translated = database_error(error)

    expected = decision(cls)
    if isinstance(expected, str):
        assert translated is None, expected
        return
    assert type(translated) is expected
    assert "secret" not in str(translated) and "UPDATE" not in str(translated)  # the driver's line, not the SQL


@pytest.mark.parametrize("driver", DBAPI_MODULES)
@pytest.mark.parametrize("cls", [cls for cls in SQLALCHEMY_ERRORS if issubclass(cls, sqlalchemy.exc.DBAPIError)
                                 and cls is not sqlalchemy.exc.IntegrityError], ids=name)  # fmt: skip
def test_a_statement_that_cost_its_connection_is_the_database_gone(cls: type[Exception], driver: str):
    assert type(database_error(sqlalchemy_error(cls, driver, invalidated=True))) is DatabaseUnavailable


def test_a_database_that_does_not_answer_is_database_unavailable():
    engine = make_engine(f"postgresql://postgres@127.0.0.1:{closed_port()}/genq")
    try:
        with pytest.raises(DatabaseUnavailable) as raised, session_scope(engine) as session:
            session.execute(text("SELECT 1"))
        assert isinstance(raised.value.__cause__, sqlalchemy.exc.OperationalError)
    finally:
        engine.dispose()


def test_a_lost_claim_on_a_unique_index_stays_the_answer_callers_take(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'claims.db'}")
    with session_scope(engine) as session:
        session.execute(text("CREATE TABLE claims (id INTEGER PRIMARY KEY)"))
        session.execute(text("INSERT INTO claims VALUES (1)"))

    with pytest.raises(sqlalchemy.exc.IntegrityError), session_scope(engine) as session:
        session.execute(text("INSERT INTO claims VALUES (1)"))
    engine.dispose()


def test_a_database_url_sqlalchemy_cannot_take_is_a_config_error():
    with pytest.raises(ConfigError, match="GENQ_DATABASE_URL"):
        make_engine("nosuchdialect://somewhere/genq")


def locked() -> sqlalchemy.exc.OperationalError:
    error = sqlalchemy_error(sqlalchemy.exc.OperationalError, "sqlite3")
    assert isinstance(error, sqlalchemy.exc.OperationalError)
    return error


def test_the_record_of_a_paid_answer_waits_for_the_database_to_come_back():
    calls: list[int] = []

    def write() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise locked()
        return "recorded"

    assert while_the_database_is_back(write, patience=10) == "recorded"
    assert len(calls) == 3


def test_the_wait_ends_when_patience_does():
    def write() -> None:
        raise locked()

    with pytest.raises(DatabaseUnavailable):
        while_the_database_is_back(write, patience=0.1)


def test_a_refused_statement_is_not_written_again():
    calls: list[int] = []

    def write() -> None:
        calls.append(1)
        raise sqlalchemy_error(sqlalchemy.exc.ProgrammingError, "psycopg")

    with pytest.raises(DatabaseError) as raised:
        while_the_database_is_back(write, patience=10)
    assert type(raised.value) is DatabaseError and len(calls) == 1


# -- obstore: jobs.storage.storage_error --------------------------------------------------------------

OBSTORE_ERRORS = [*classes_of(obstore.exceptions), FileNotFoundError, ValueError, OSError]
"""obstore's own classes, and the builtin ones it raises too (a missing object, a path it cannot
take, a local disk)."""


@pytest.mark.parametrize("method", ["put", "get"])
@pytest.mark.parametrize("cls", OBSTORE_ERRORS, ids=name)
def test_every_obstore_error_becomes_a_storage_error(monkeypatch: pytest.MonkeyPatch, cls: type[Exception],
                                                      method: str):  # fmt: skip
    original = cls("boom\n\nDebug source:\nGeneric { url: s3://user:password@bucket }")

    def fail(*_args: object) -> None:
        raise original

    monkeypatch.setattr(jobs.storage.obstore, method, fail)
    store = Storage("memory://")
    with pytest.raises(StorageError) as raised:
        store.put("b-1/a.png", b"x") if method == "put" else store.get("b-1/a.png")

    assert raised.value.__cause__ is original
    assert "password" not in str(raised.value)
    if method == "get" and issubclass(cls, FileNotFoundError | obstore.exceptions.NotFoundError):
        assert str(raised.value) == "b-1/a.png is not in memory://"


def test_a_path_obstore_will_not_take_is_a_storage_error(tmp_path: Path):
    with pytest.raises(StorageError, match=r"cannot write \.\./escape\.png"):
        Storage(f"file://{tmp_path}").put("../escape.png", b"x")


# -- decisions keyed by class go through the MRO ------------------------------------------------------


def test_a_subclass_of_an_outcome_takes_its_parents_rotation_reason():
    class Revoked(BadCredentials):
        pass

    assert decide(ROTATION_REASONS, Revoked("key revoked")) == "the provider refused its key"
    assert decide(ROTATION_REASONS, ProviderError("other")) == "the account cannot take jobs now"
