"""A private, throw-away PostgreSQL server that a test may stop, restart and kill.

The chaos tests need to take the database away under a running worker and give it back. They cannot
do that to a shared server (CI's, or the machine's own on 127.0.0.1:5432), so this module builds one
of their own: ``initdb`` into a directory the test owns, ``pg_ctl start`` on a free port on 127.0.0.1
with its unix socket in that same directory, trust authentication, and a database ``genq``.

PostgreSQL refuses to run as root. When this process is root (as on the development VM), every
PostgreSQL binary is run as an unprivileged user (``postgres`` by default) through ``setpriv`` (or
``runuser``), the cluster's own directories are given to that user, and the directories above them get
the search bit they need for that user to reach them. When this process is not root, the binaries run
directly as the current user and nothing is chowned or chmodded.

Durability against a *machine* crash is traded for speed (``initdb --no-sync``, ``fsync=off``,
``full_page_writes=off``): nothing is flushed to disk, which a test cluster does not care about.
Durability against a *server* crash is kept, because that is what the chaos tests exercise: with
``synchronous_commit`` left on, a commit returns only after its WAL has been written to the kernel,
so a SIGKILLed postmaster comes back with every row it acknowledged. (``synchronous_commit=off``
would not: it acknowledges commits whose WAL still sits in shared memory, and a SIGKILL within the
WAL writer's 200 ms loses them, so a chaos test would see "lost" jobs that a real server keeps.)
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal

DATABASE = "genq"
SUPERUSER = "postgres"
"""The cluster's superuser (``initdb -U``); a role name, whichever OS user runs the server."""

DEFAULT_OS_USER = "postgres"
"""The OS user the server runs as when this process is root."""

_RESERVED_PORTS = frozenset({5432})
"""Never hand out the machine's own PostgreSQL port, even if it happens to be free right now."""

_MAX_SOCKET_PATH = 107
"""sun_path is 108 bytes on Linux; PostgreSQL refuses a longer socket path and will not start."""

_SETTINGS_FILE = "genq_test.conf"

_PG_ENV = ("PGDATA", "PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGOPTIONS", "PGSERVICE")
"""Client variables that would point pg_ctl / libpq at some other server; removed from child envs."""


class PostgresUnavailable(RuntimeError):
    """initdb / pg_ctl cannot be found or run here (the message says why)."""


class PostgresError(RuntimeError):
    """The private server failed to start, stop or answer; the message names the log to read."""


@dataclass(frozen=True)
class Availability:
    """The answer of :meth:`PrivatePostgres.available`: false with a ``reason`` when it cannot run.

    A plain ``(bool, str)`` tuple would always be truthy, so ``if not PrivatePostgres.available()``
    would silently never skip; this object is falsy exactly when the cluster cannot run.
    """

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class _Binaries:
    pg_ctl: str
    initdb: str
    version: str


@dataclass(frozen=True)
class _RunAs:
    """How to run a PostgreSQL binary: a command prefix and the uid/gids it ends up with."""

    prefix: tuple[str, ...]
    name: str
    uid: int
    gid: int
    groups: frozenset[int]
    home: str


def find_binaries() -> _Binaries:
    """``pg_ctl`` and ``initdb`` from one installation: PATH first, else ``/usr/lib/postgresql/*/bin``.

    Both must come from the same major version (an initdb of one version and a pg_ctl of another make
    a cluster that will not start), so a PATH pair that disagrees falls through to the versioned dirs.
    Symlinks are resolved (on this VM /usr/local/bin/pg_ctl links to /usr/lib/postgresql/15/bin), so
    error messages name the real files; wrapper scripts are kept as they are and simply run.
    """
    candidates: list[tuple[str, str]] = []
    on_path = shutil.which("pg_ctl"), shutil.which("initdb")
    if on_path[0] and on_path[1]:
        candidates.append((os.path.realpath(on_path[0]), os.path.realpath(on_path[1])))
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True):
        candidates.append((str(bindir / "pg_ctl"), str(bindir / "initdb")))
    problems: list[str] = []
    for pg_ctl, initdb in candidates:
        if not (os.access(pg_ctl, os.X_OK) and os.access(initdb, os.X_OK)):
            problems.append(f"{Path(pg_ctl).parent}: no executable pg_ctl and initdb")
            continue
        versions = [_version(binary) for binary in (pg_ctl, initdb)]
        if None in versions:
            problems.append(f"{pg_ctl} or {initdb} does not run (--version failed)")
            continue
        majors = {str(v).split(".")[0] for v in versions}
        if len(majors) != 1:
            problems.append(f"{pg_ctl} is {versions[0]} but {initdb} is {versions[1]}")
            continue
        return _Binaries(pg_ctl=pg_ctl, initdb=initdb, version=str(versions[1]))
    if not problems:
        raise PostgresUnavailable("no pg_ctl/initdb on PATH or under /usr/lib/postgresql/*/bin")
    raise PostgresUnavailable("; ".join(problems))


def _version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)


def _version(binary: str) -> str | None:
    try:
        result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"(\d+(?:\.\d+)*)", result.stdout)
    return found.group(1) if result.returncode == 0 and found else None


def _run_as(os_user: str | None) -> _RunAs:
    """Root must drop to an unprivileged user; anyone else runs PostgreSQL as themselves.

    ``setpriv`` is preferred to ``runuser``: it only changes uid/gid/groups and execs, with no PAM
    session, utmp entry or log line per call. Both set the real *and* effective ids, which matters:
    ``postgres`` refuses to start when they differ, just as it refuses euid 0.
    """
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return _RunAs((), entry.pw_name, entry.pw_uid, os.getegid(), frozenset(os.getgroups()), entry.pw_dir)
    name = os_user or DEFAULT_OS_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no {name!r} user to run PostgreSQL as (initdb refuses root)"
        ) from None
    if entry.pw_uid == 0:
        raise PostgresUnavailable(f"user {name!r} is uid 0, and PostgreSQL refuses to run as root")
    groups = frozenset({entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)})
    if shutil.which("setpriv"):
        prefix: tuple[str, ...] = (
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--init-groups",
            "--",
        )
    elif shutil.which("runuser"):
        prefix = ("runuser", "-u", name, "--")
    else:
        raise PostgresUnavailable("running as root, and neither setpriv nor runuser is here to drop to a user")
    return _RunAs(prefix, name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def _free_port() -> int:
    """A port nothing listens on right now; PostgreSQL binds it a moment later (a retry covers a race)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _RESERVED_PORTS:
            return port


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie counts as dead (nobody may ever reap it here)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (the postmaster and its backends), from /proc."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the comm field: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


class PrivatePostgres:
    """A PostgreSQL server of this process's own in ``directory``, to stop, restart and kill at will.

    Layout: ``directory/data`` (the cluster), ``directory/run`` (its unix socket), and
    ``directory/postgres.log`` (initdb's and the server's output, so tests stay quiet).

    ``stop()`` and ``__exit__`` leave no postmaster and no backend behind: a fast shutdown first, then
    an immediate one, then SIGKILL to the server's whole process group. Servers still running when the
    interpreter exits are stopped by an ``atexit`` hook, for a test that never reached its ``stop()``.
    """

    _running: ClassVar[set[PrivatePostgres]] = set()

    def __init__(
        self, directory: Path, *, port: int | None = None, os_user: str | None = None, timeout: float = 60.0
    ) -> None:
        self.directory = Path(directory).absolute()
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "run"
        self.log_path = self.directory / "postgres.log"
        self.timeout = timeout
        self._port = port
        self._fixed_port = port is not None
        self._os_user = os_user
        self._binaries: _Binaries | None = None
        self._as: _RunAs | None = None
        self._pgid: int | None = None
        self.permission_changes: list[Path] = []
        """Directories above the cluster that were given a search bit so the server's user can reach them."""

    # ---------------------------------------------------------------- availability

    @classmethod
    def available(cls, os_user: str | None = None) -> Availability:
        """Whether a private cluster can run here; never raises, so a caller can print why it skips."""
        try:
            import psycopg  # noqa: F401  (the readiness check and CREATE DATABASE need it)
        except ImportError:
            return Availability(False, "psycopg is not installed")
        try:
            binaries = find_binaries()
            run_as = _run_as(os_user)
        except PostgresUnavailable as exc:
            return Availability(False, str(exc))
        for binary in (binaries.pg_ctl, binaries.initdb):
            command = [*run_as.prefix, binary, "--version"]
            try:
                result = subprocess.run(
                    command, capture_output=True, text=True, timeout=10, check=False, cwd="/", env=_child_env(run_as)
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return Availability(False, f"{' '.join(command)} failed: {exc}")
            if result.returncode != 0:
                output = (result.stderr or result.stdout).strip()
                return Availability(False, f"{' '.join(command)} exited {result.returncode}: {output}")
        return Availability(True, f"PostgreSQL {binaries.version} as {run_as.name!r} ({binaries.pg_ctl})")

    # ---------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresError("the server has no port until start() has run")
        return self._port

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/genq``: TCP, so clients see a restart as a dropped socket."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid``, when that names a live process."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except (OSError, UnicodeDecodeError):
            return None
        pid = int(first) if first.isdigit() else None
        return pid if pid is not None and _alive(pid) else None

    @property
    def running(self) -> bool:
        return self.pid is not None or bool(self._pgid is not None and _group_members(self._pgid))

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> str:
        """initdb on first use, start the server, wait until it answers, ensure ``genq``; return ``url``.

        Picks a free port on first start and keeps it afterwards, so a URL handed to a worker stays
        valid across ``restart()`` and ``kill()`` + ``start()``. A start that fails stops whatever it
        started before raising.
        """
        if self._binaries is None:
            self._binaries = find_binaries()
            self._as = _run_as(self._os_user)
        if self.running:  # already up (started twice, or left running by an earlier run): adopt it
            self._port = self._port or self._port_from_pid_file()
            return self.url
        self._prepare_directories()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        attempts = 1 if self._fixed_port else 5
        for attempt in range(attempts):
            if self._port is None or (attempt and not self._fixed_port):
                self._port = _free_port()
            self._write_settings()
            try:
                self._pg_ctl_start()
                break
            except PostgresError:
                self._force_stop()
                if attempt + 1 == attempts or not self._log_tail_says_port_taken():
                    raise
        try:
            self._wait_until_answering()
            self._ensure_database()
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop the server and every backend, whatever it takes; a no-op when nothing runs.

        ``fast`` disconnects clients and rolls back their transactions, then checkpoints, so the next
        start needs no recovery. If that does not finish in time, an immediate shutdown and then
        SIGKILL of the process group follow, so this never returns with a postmaster still running.
        """
        try:
            if self.pid is not None and self._binaries is not None:
                self._pg_ctl("stop", "-m", mode, timeout=self.timeout, check=False)
                if self.pid is not None:
                    self._pg_ctl("stop", "-m", "immediate", timeout=self.timeout, check=False)
        finally:
            self._force_stop()

    def restart(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop and start again on the same port and data, while clients may be connected.

        ``fast`` is the default on purpose: the default ``smart`` mode waits for every client to
        disconnect, and a connection pool never does, so the restart would hang. ``fast`` ends every
        session at once (clients get "terminating connection due to administrator command", and a pool
        with ``pool_pre_ping`` reconnects), rolls back open transactions and checkpoints cleanly.
        ``immediate`` is the crash-like variant: no checkpoint, WAL recovery at the next start.
        """
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once, like the OOM killer or a power cut.

        Only the whole group, not the postmaster alone: orphaned backends keep the old shared memory
        attached and the next start would refuse to run. A later ``start()`` replays the WAL and comes
        back with every committed row.
        """
        self._force_stop()

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PrivatePostgres({str(self.directory)!r}, port={self._port}, running={self.running})"

    # ---------------------------------------------------------------- internals

    def _prepare_directories(self) -> None:
        """Make ``data`` and ``run`` belong to the server's user, and reachable by it.

        pytest's ``tmp_path`` for root lives under ``/tmp/pytest-of-root`` (mode 0700), which the
        ``postgres`` user cannot enter. Only the missing *search* bit is added, for the class of user
        that applies, on each directory up the path: the server can then walk down to its own
        directories but still cannot list or write anything else.
        """
        assert self._as is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(path, self._as.uid, self._as.gid)
            path.chmod(0o700)
        if os.geteuid() != 0:
            return
        for path in [self.directory, *self.directory.parents]:
            info = path.stat()
            if info.st_uid == self._as.uid:
                bit = stat.S_IXUSR
            elif info.st_gid in self._as.groups:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not info.st_mode & bit:
                path.chmod(stat.S_IMODE(info.st_mode) | bit)
                self.permission_changes.append(path)
        check = self._run(["test", "-w", str(self.data_dir), "-a", "-w", str(self.socket_dir)], timeout=10)
        if check.returncode != 0:
            raise PostgresError(f"user {self._as.name!r} still cannot write {self.data_dir} (ACLs? a mount?)")

    def _initdb(self) -> None:
        """Create the cluster; a data dir left half-made by an interrupted initdb is emptied first."""
        assert self._binaries is not None
        for leftover in self.data_dir.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        result = self._run(
            [
                self._binaries.initdb,
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            timeout=self.timeout,
        )
        if result.returncode != 0:
            raise PostgresError(f"initdb exited {result.returncode}; see {self.log_path}")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(f"\ninclude_if_exists '{_SETTINGS_FILE}'\n")

    def _port_from_pid_file(self) -> int | None:
        """postmaster.pid's fourth line is the port; used only to adopt a server already running."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    def _write_settings(self) -> None:
        """Settings go in a file postgresql.conf includes (not ``pg_ctl -o``): no shell quoting, and
        ``postgresql.auto.conf`` (ALTER SYSTEM) still wins over them.

        The socket goes in ``run/`` so it never meets the machine's own server in /var/run/postgresql.
        If that path would be too long for a unix socket, the server listens on TCP only.
        """
        socket_path = self.socket_dir / f".s.PGSQL.{self.port}"
        socket_dirs = str(self.socket_dir) if len(str(socket_path)) <= _MAX_SOCKET_PATH else ""
        settings = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": socket_dirs,
            "fsync": "off",
            "synchronous_commit": "on",  # on purpose: see the module docstring
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": "100",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        lines = ["# written by tests/pgcluster.py on every start"]
        lines += [f"{name} = '{value.replace(chr(39), chr(39) * 2)}'" for name, value in settings.items()]
        target = self.data_dir / _SETTINGS_FILE
        target.write_text("\n".join(lines) + "\n")
        if os.geteuid() == 0 and self._as is not None:
            os.chown(target, self._as.uid, self._as.gid)

    def _pg_ctl_start(self) -> None:
        """``pg_ctl start -w``: returns once the postmaster reports ready, or raises with the log."""
        result = self._pg_ctl("start", "-w", "-t", str(int(self.timeout)), timeout=self.timeout + 10, check=False)
        pid = self.pid
        if pid is not None:
            self._pgid = self._group_of(pid)
            self._running.add(self)
        if result.returncode != 0 or pid is None:
            raise PostgresError(f"pg_ctl start exited {result.returncode} on port {self._port}; see {self.log_path}")

    def _wait_until_answering(self) -> None:
        """pg_ctl says "ready" from postmaster.pid; a real connection over TCP is what clients need."""
        import psycopg

        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with psycopg.connect(self._conninfo("postgres"), connect_timeout=2) as connection:
                    connection.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline or self.pid is None:
                    raise PostgresError(
                        f"the server on port {self._port} does not answer ({exc}); see {self.log_path}"
                    ) from exc
                time.sleep(0.05)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as connection:
            found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if found is None:
                connection.execute(f'CREATE DATABASE "{DATABASE}"')

    def _conninfo(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def _force_stop(self) -> None:
        """SIGKILL whatever is left of the server's process group, then clear its stale lock files."""
        pid = self.pid
        if pid is not None and self._pgid is None:
            self._pgid = self._group_of(pid)
        if pid is not None or (self._pgid is not None and _group_members(self._pgid)):
            self._signal_group(signal.SIGKILL)
            self._wait_group_gone(self.timeout)
        self._pgid = None
        self._running.discard(self)
        self._remove_stale_lock_files()

    def _remove_stale_lock_files(self) -> None:
        """Delete ``postmaster.pid`` and the socket lock once their postmaster is certainly dead.

        A SIGKILLed postmaster leaves both behind, and the next postmaster refuses to start while
        ``kill(pid, 0)`` succeeds on the pid they name. That happens for a while here: the dead
        postmaster is a zombie until the VM's init reaps it (seconds, or never), and a recycled pid
        would do the same. A zombie holds no shared memory and no files, so removing the locks is safe.
        """
        locks = [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]
        for lock in locks:
            try:
                first = lock.read_text().split("\n", 1)[0].strip()
            except (OSError, UnicodeDecodeError):
                continue
            if first.isdigit() and not _alive(int(first)):
                lock.unlink(missing_ok=True)

    def _signal_group(self, signum: signal.Signals) -> None:
        pid = self.pid
        if self._pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._pgid, signum)
        if pid is not None:  # a postmaster outside its own group (should not happen): at least it goes
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _wait_group_gone(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pid is not None or (self._pgid is not None and _group_members(self._pgid)):
            if time.monotonic() > deadline:
                raise PostgresError(f"server processes in group {self._pgid} survived SIGKILL")
            time.sleep(0.02)

    @staticmethod
    def _group_of(pid: int) -> int | None:
        """The postmaster's process group, when it is its own (pg_ctl starts it with setsid).

        Never this process's group: killing that would take the test runner down with the server.
        """
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            return None
        return pgid if pgid == pid and pgid != os.getpgrp() else None

    def _pg_ctl(self, *args: str, timeout: float, check: bool) -> subprocess.CompletedProcess[bytes]:
        assert self._binaries is not None
        result = self._run([self._binaries.pg_ctl, "-D", str(self.data_dir), *args], timeout=timeout)
        if check and result.returncode != 0:
            raise PostgresError(f"pg_ctl {' '.join(args)} exited {result.returncode}; see {self.log_path}")
        return result

    def _run(self, command: list[str], *, timeout: float) -> subprocess.CompletedProcess[bytes]:
        """Run a PostgreSQL binary as the server's user, its output appended to ``postgres.log``.

        The log is opened here and inherited: the postmaster writes to it for life without needing
        write access to ``directory``, and no pipe is left for ``subprocess`` to wait on.
        """
        assert self._as is not None
        with open(self.log_path, "ab") as log:
            log.write(f"\n$ {' '.join(command)}\n".encode())
            log.flush()
            try:
                return subprocess.run(
                    [*self._as.prefix, *command],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    env=_child_env(self._as),
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return subprocess.CompletedProcess(command, returncode=-1)

    def _log_tail_says_port_taken(self) -> bool:
        try:
            tail = self.log_path.read_bytes()[-4000:].decode(errors="replace")
        except OSError:
            return False
        return "Address already in use" in tail or "could not create any TCP/IP sockets" in tail


def _child_env(run_as: _RunAs) -> dict[str, str]:
    """This environment minus libpq's PG* pointers, with HOME/USER of the user the binaries run as."""
    env = {name: value for name, value in os.environ.items() if name not in _PG_ENV}
    env.update(HOME=run_as.home or "/", USER=run_as.name, LOGNAME=run_as.name, LC_ALL="C")
    return env


@atexit.register
def _stop_leftovers() -> None:
    """A server whose test never reached ``stop()`` must not outlive the interpreter."""
    for server in list(PrivatePostgres._running):
        with contextlib.suppress(Exception):
            server.stop(mode="immediate")
