"""Run a command that dies with the process that started it.

``python -m jobs.lifeline PARENT_PID COMMAND...`` asks Linux to send SIGTERM when its parent goes
(``PR_SET_PDEATHSIG``), checks the parent is still the one that started it (it may have died before
the request took effect), and then becomes COMMAND. The request survives ``exec``, so a worker or a
redis-server that genq started cannot outlive a genq killed with SIGKILL. This is done in a small
program of its own rather than in ``preexec_fn``, which is unsafe once the parent runs threads (the
sandbox is one).

Where the OS has no such request, COMMAND simply runs; genq still stops its children on every
signal it can catch.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def lifeline_command(command: list[str]) -> list[str]:
    """``command``, started so that it ends when this process ends."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-m", "jobs.lifeline", str(os.getpid()), *command]


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m jobs.lifeline PARENT_PID COMMAND...")
    parent, command = int(argv[0]), argv[1:]
    _die_with_parent()
    if os.getppid() != parent:
        sys.exit(0)  # the parent is gone already; nothing is waiting for this command
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
