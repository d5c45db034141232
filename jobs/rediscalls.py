"""The one boundary where redis-py's errors become genq's ``RedisUnavailable``.

Redis keeps what the fleet shares for a moment (rate limits, pauses, heartbeats, learned poll delays,
and in the default deployment the broker's messages); the database keeps the record. So a Redis that
fails a command costs a delay, never a job, and each caller says how it does without (a heartbeat
skipped, the default poll delay, a step left for the reconciler) by catching one genq error instead
of knowing redis-py's classes.

Wrap the Redis commands, and only them, in ``talking_to_redis``: it also takes the ``OSError`` a
dropped socket can raise from beneath redis-py, which would be a different failure elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import ChildDeadlockedError

from jobs.errors import RedisUnavailable

REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, ChildDeadlockedError, OSError)
"""What a command sent through ``redis.Redis`` can raise: redis-py's own errors (``ChildDeadlockedError``,
a connection pool left locked by a fork, stands outside ``RedisError``) and the socket's."""


def redis_error(error: Exception, doing: str = "") -> RedisUnavailable:
    """``error`` as genq's, saying what genq was ``doing``. redis-py's messages name the server's host
    and port, never its password, so they are kept."""
    during = f" {doing}" if doing else ""
    return RedisUnavailable(f"Redis failed{during}: {type(error).__name__}: {error}")


@contextmanager
def talking_to_redis(doing: str = "") -> Iterator[None]:
    """Raise every failure of the block's Redis commands as ``RedisUnavailable``, from the original."""
    try:
        yield
    except REDIS_ERRORS as error:
        raise redis_error(error, doing) from error
