"""A patch to kombu's Redis transport so a worker survives a restart of its Redis broker.

Call ``install()`` once per process before the Celery app connects (``workers.app.make_app`` does).
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    """Keep a worker holding late-acked messages alive when its Redis broker restarts.

    Why: with kombu 5.7.0 (the latest release; celery 5.7.0 needs ``kombu>=5.7.0``), a worker holding
    unacked messages exits with ``Unrecoverable error: AttributeError("'NoneType' object has no
    attribute 'hostname'")`` when Redis is killed and started again. This happens when the connection
    loss is noticed on another socket (the remote-control channel) while the task channel still has a
    BRPOP in flight, i.e. it holds messages and has a free slot. The steps:

    1. ``Consumer.on_connection_error_after_connected`` (celery/worker/consumer/consumer.py:476) calls
       ``Connection.collect()``, which closes the channels. ``redis.Channel.close``
       (kombu/transport/redis.py:1892-1894) first reads the pending BRPOP reply with
       ``_brpop_read()``. On the dead socket that raises ``ConnectionError`` and stops the close
       before the channel is marked closed, before its unacked messages are restored, and before
       the transport forgets the channel.
    2. ``collect()`` then sets ``transport.client = None`` (kombu/connection.py:429).
    3. The consumer then calls ``connection.close()`` (consumer.py:487), which closes the default
       (task) channel again. This time the close gets as far as ``restore_unacked_once``
       (kombu/transport/virtual/base.py:806, 300), and ``QoS.restore_unacked``
       (redis.py:494) needs a new connection pool. ``Channel._connparams`` (redis.py:1956-1959)
       reads ``self.connection.client.hostname`` and raises AttributeError. AttributeError is not a
       connection error, so nothing on the way up ignores it, and the worker exits.

    The patch changes two things:

    * ``Channel.close`` reads a pending BRPOP reply as before (the point of kombu PR #1733, kombu
      5.3.2: keep a message popped by a live BRPOP). If the socket is dead it now drops the reply,
      which was lost with the connection, and goes on with the close. The channel is then closed
      while its transport is still wired: unacked messages are restored when Redis is already back,
      or stay in Redis's ``unacked`` hash for ``visibility_timeout`` when it is not.
    * ``Channel._connparams`` raises redis ``ConnectionError`` instead of AttributeError when the
      channel's transport is already closed. This is a backstop for other late users of a closed
      channel (kombu issue #582 showed the same AttributeError from ``queue_delete``). Celery
      ignores or recovers from a connection error. It does not recover from an AttributeError.

    Upstream: no kombu issue or release fixes this path. kombu#582 (the same ``_connparams``
    AttributeError after ``collect()``, via another caller) and PR #1733 (which added the BRPOP read
    to ``close()``) are the closest. kombu 5.7.0 is the newest version on PyPI, and kombu's main
    branch still has the same ``Channel.close``.

    When it can go: once a kombu release finishes ``Channel.close`` after a connection error while
    reading BRPOP, or no longer reads ``connection.client`` after ``collect()``. To check, disable
    this call and run ``tests/test_broker_restart.py``. It fails without the patch on kombu 5.7.0.

    Calling it more than once is safe.
    """
    from kombu.transport import redis as kombu_redis
    from redis import exceptions as redis_errors

    channel_cls: Any = kombu_redis.Channel
    if getattr(channel_cls, "_genq_brokerfix", False):
        return
    # The socket-level errors only: kombu's Transport.connection_errors also has KeyError and
    # InconsistencyError, which a delivery can raise and which must not be swallowed here.
    socket_errors = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
    closed_error = redis_errors.ConnectionError
    original_close = channel_cls.close
    original_connparams = channel_cls._connparams

    def close(self: Any) -> None:
        if self._in_poll:
            try:
                self._brpop_read()
            except kombu_redis.Empty:
                pass
            except socket_errors:
                # The connection is gone, and the BRPOP reply with it. _brpop_read has already
                # disconnected the socket and cleared _in_poll, so the close below goes all the way.
                pass
        original_close(self)

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is None:
            raise closed_error("kombu redis channel used after its broker connection was closed")
        return original_connparams(self, asynchronous=asynchronous)

    close.__doc__ = original_close.__doc__
    channel_cls.close = close
    channel_cls._connparams = _connparams
    channel_cls._genq_brokerfix = True
