"""Which worker process holds a job, and whether that process is still alive.

A job that is submitting or collecting names its holder, the process doing the step. Each worker
process keeps a heartbeat in Redis with a short time to live, refreshed by a daemon thread; a holder
whose heartbeat is gone died (SIGKILL, out of memory, a lost host), and the reconciler takes its jobs
at once instead of waiting out their leases. A Redis that has just restarted has lost every
heartbeat, so a missing one counts only once Redis has been up longer than a heartbeat lives.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Collection

import redis

from workers import keys

HEARTBEAT_TTL = 15.0
"""Seconds a heartbeat lives unless refreshed."""
HEARTBEAT_EVERY = 3.0
"""Seconds between refreshes: a process must miss several in a row to be taken for dead."""

log = logging.getLogger(__name__)
_holders: dict[int, str] = {}


def holder_id() -> str:
    """This process, as jobs name their holder: host, pid, and the moment this pid first asked
    (a forked child asks for itself, so a recycled pid is another holder)."""
    pid = os.getpid()
    if pid not in _holders:
        _holders[pid] = f"{socket.gethostname()}:{pid}:{int(time.time() * 1000)}"
    return _holders[pid]


class Heartbeat:
    """Keeps this process's heartbeat alive in Redis until the process ends."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._holder = holder_id()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="genq-heartbeat", daemon=True)

    @property
    def holder(self) -> str:
        return self._holder

    def start(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def beat(self) -> None:
        try:
            self._client.set(keys.heartbeat(self._holder), 1, px=int(HEARTBEAT_TTL * 1000))
        except (redis.RedisError, OSError) as error:
            # Redis restarting: the next beat puts it back; no holder is judged while Redis is young.
            log.debug("heartbeat not written: %s", error)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            self.beat()


def dead_holders(client: redis.Redis, holders: Collection[str]) -> set[str]:
    """The holders among these whose heartbeat is gone; none while Redis itself is younger than a
    heartbeat's life (it may have restarted empty and lost them all)."""
    if not holders:
        return set()
    uptime = client.info("server").get("uptime_in_seconds", 0)
    if float(uptime) < HEARTBEAT_TTL + HEARTBEAT_EVERY:
        return set()
    ordered = sorted(holders)
    pipeline = client.pipeline(transaction=False)
    for holder in ordered:
        pipeline.exists(keys.heartbeat(holder))
    return {holder for holder, alive in zip(ordered, pipeline.execute(), strict=True) if not alive}
