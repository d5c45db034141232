"""The yardstick: a Celery app with genq's own configuration and one task that does nothing but
count itself, so a bare round trip through the same broker and worker settings can be timed."""

from __future__ import annotations

import os
from functools import cache

import redis

from jobs.redisserver import client_url
from workers.app import make_app

app = make_app()
app.conf.update(include=[], beat_schedule={})
COUNTER = "genq:bench:noop"


@cache
def _counter_client() -> redis.Redis:
    """One connection pool per worker process, as genq's own tasks keep theirs in the runtime."""
    return redis.Redis.from_url(client_url(os.environ["GENQ_REDIS_URL"]))


@app.task(name="bench.noop")
def noop() -> None:
    _counter_client().incr(COUNTER)
