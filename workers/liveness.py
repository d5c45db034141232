"""Which worker process holds a job, and whether that process is still alive.

A job that is submitting or collecting names its holder, the process doing the step. Each worker
process keeps a heartbeat in Redis with a short time to live, refreshed by a daemon thread; a holder
whose heartbeat is gone died (SIGKILL, out of memory, a lost host), and the reconciler takes its jobs
at once instead of waiting out their leases. A Redis that has just restarted has lost every
heartbeat, so a missing one counts only once Redis has been up longer than a heartbeat lives.

A prefork worker's main process sees its pool processes die (Celery hands it the task's
``WorkerLostError``) and drops the dead one's heartbeat at once (``forget_child``), rather than leave
it to run out. It knows the child's pid but not the moment that child named itself, so it finds the
heartbeat by host, pid and family: the family is drawn once per worker and inherited by the pool
processes it forks, so a process elsewhere with the same host name and pid (containers sharing the
host's network) is never taken for the dead child.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Collection

import redis

from jobs.errors import RedisUnavailable
from jobs.rediscalls import talking_to_redis
from workers import keys

HEARTBEAT_TTL = 15.0
"""Seconds a heartbeat lives unless refreshed."""
HEARTBEAT_EVERY = 3.0
"""Seconds between refreshes: a process must miss several in a row to be taken for dead."""

FAMILY = uuid.uuid4().hex[:12]
"""Drawn when the worker's main process imports this module, before it forks its pool."""

log = logging.getLogger(__name__)
_holders: dict[int, str] = {}


def holder_id() -> str:
    """This process, as jobs name their holder: host, pid, the moment this pid first asked (a
    forked child asks for itself, so a recycled pid is another holder), and its family."""
    pid = os.getpid()
    if pid not in _holders:
        _holders[pid] = f"{socket.gethostname()}:{pid}:{int(time.time() * 1000)}:{FAMILY}"
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
            with talking_to_redis("writing a heartbeat"):
                self._client.set(keys.heartbeat(self._holder), 1, px=int(HEARTBEAT_TTL * 1000))
        except RedisUnavailable as error:
            # Redis restarting: the next beat puts it back; no holder is judged while Redis is young.
            log.debug("heartbeat not written: %s", error)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            self.beat()


def dead_holders(client: redis.Redis, holders: Collection[str]) -> set[str]:
    """The holders among these whose heartbeat is gone; none while Redis itself is younger than a
    heartbeat's life (it may have restarted empty and lost them all). ``RedisUnavailable`` when Redis
    cannot say: no holder is judged dead then, and the leases decide."""
    if not holders:
        return set()
    ordered = sorted(holders)
    with talking_to_redis("reading heartbeats"):
        uptime = client.info("server").get("uptime_in_seconds", 0)
        if float(uptime) < HEARTBEAT_TTL + HEARTBEAT_EVERY:
            return set()
        pipeline = client.pipeline(transaction=False)
        for holder in ordered:
            pipeline.exists(keys.heartbeat(holder))
        alive = pipeline.execute()
    return {holder for holder, beating in zip(ordered, alive, strict=True) if not beating}


def forget_child(client: redis.Redis, pid: int) -> list[str]:
    """Drop the heartbeat of this worker's pool process ``pid``, which it saw die, so the
    reconciler's next pass takes its jobs; the holders it was. ``RedisUnavailable`` when Redis cannot
    say: the heartbeat then runs out by itself.

    Only this family's heartbeats match, so another machine's process with the same host name and pid
    is never touched; a pool process of our own could have the pid only after the pid space wrapped
    around between two forks."""
    pattern = keys.heartbeat(f"{_glob_literal(socket.gethostname())}:{pid}:*:{FAMILY}")
    with talking_to_redis("dropping a dead process's heartbeat"):
        found = [key if isinstance(key, str) else key.decode() for key in client.scan_iter(match=pattern, count=1000)]
        if found:
            client.delete(*found)
    return [key.removeprefix(keys.heartbeat("")) for key in found]


def _glob_literal(text: str) -> str:
    """``text`` matched as itself in a Redis ``MATCH`` pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)
