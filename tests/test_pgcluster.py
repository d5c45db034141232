"""The private PostgreSQL of tests/pgcluster.py does what the chaos tests rely on.

They rely on four things: a restart under connected clients finishes instead of waiting for them, the
URL stays valid across it, an engine with ``pool_pre_ping`` gets working connections again with no
help, and committed rows survive both a clean restart and a SIGKILL. And on one more, so a failing
chaos test cannot poison the machine: once stopped, no postmaster or backend is left running.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, exc, text

from jobs.db import make_engine
from tests.pgcluster import PrivatePostgres, _alive, _group_members


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PrivatePostgres]:
    """A started private cluster in pytest's tmp_path (mode 0700 dirs: the root case is exercised too)."""
    availability = PrivatePostgres.available()
    if not availability:
        pytest.skip(f"skipping the PostgreSQL restart: {availability.reason}")
    with PrivatePostgres(tmp_path / "pg") as server:
        yield server


def _write_row(engine: Engine, note: str) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS probe (id serial PRIMARY KEY, note text NOT NULL)"))
        connection.execute(text("INSERT INTO probe (note) VALUES (:note)"), {"note": note})


def _notes(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT note FROM probe ORDER BY id")).scalars())


def _port_closed(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _processes_mentioning(needle: str) -> list[int]:
    """Live processes whose command line names ``needle`` (the postmaster's names its data dir)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _assert_nothing_left(server: PrivatePostgres, postmaster: int, port: int) -> None:
    assert not server.running
    assert not _alive(postmaster), f"postmaster {postmaster} still runs"
    assert _group_members(postmaster) == [], "backends of the stopped server still run"
    assert _processes_mentioning(str(server.data_dir)) == []
    assert _port_closed(port)


def test_restart_under_a_connected_engine_keeps_rows_and_the_engine_recovers(pg: PrivatePostgres) -> None:
    url, port = pg.url, pg.port
    assert url == f"postgresql://postgres@127.0.0.1:{port}/genq"
    assert port != 5432
    engine = make_engine(url)
    try:
        _write_row(engine, "before restart")
        assert _notes(engine) == ["before restart"]  # leaves an idle connection in the pool
        held = engine.connect()  # and one checked out, mid-transaction, as a worker would hold it
        held.execute(text("SELECT 1"))
        old_postmaster = pg.pid

        started = time.monotonic()
        pg.restart()
        took = time.monotonic() - started
        assert took < 15, f"restart took {took:.1f} s: it must not wait for clients to disconnect"

        assert pg.url == url and pg.port == port
        assert pg.pid is not None and pg.pid != old_postmaster
        with pytest.raises(exc.OperationalError):  # the fast shutdown really cut the held session
            held.execute(text("SELECT 1"))
        held.close()

        assert _notes(engine) == ["before restart"]  # pool_pre_ping swapped the dead pooled connection
        _write_row(engine, "after restart")
        assert _notes(engine) == ["before restart", "after restart"]
    finally:
        engine.dispose()

    postmaster = pg.pid
    assert postmaster is not None
    pg.stop()
    _assert_nothing_left(pg, postmaster, port)


def test_kill_then_start_recovers_committed_rows(pg: PrivatePostgres) -> None:
    engine = make_engine(pg.url)
    try:
        _write_row(engine, "committed before the crash")
        postmaster = pg.pid
        assert postmaster is not None
        pg.kill()
        _assert_nothing_left(pg, postmaster, pg.port)

        pg.start()  # WAL replay; the row was committed, so it is there
        assert _notes(engine) == ["committed before the crash"]
    finally:
        engine.dispose()


def test_exit_after_a_failure_leaves_no_process(tmp_path: Path) -> None:
    availability = PrivatePostgres.available()
    if not availability:
        pytest.skip(f"skipping the PostgreSQL restart: {availability.reason}")
    server = PrivatePostgres(tmp_path / "pg")
    with pytest.raises(RuntimeError, match="the test failed"), server:
        engine = make_engine(server.url)
        held = engine.connect()  # a client still connected when the failure unwinds the block
        postmaster, port = server.pid, server.port
        raise RuntimeError("the test failed")
    assert postmaster is not None
    _assert_nothing_left(server, postmaster, port)
    held.invalidate()
    engine.dispose()
