"""The guarded transport every outbound request goes through: genq fetches only public addresses.

Which addresses those are is ``jobs.addresses.AddressPolicy``; this module makes it hold where the
connection is made, like Stripe's Smokescreen proxy:

1. ``GuardedTransport.handle_request`` refuses anything but an absolute ``http``/``https`` URL with a
   host, before the request reaches the connection pool (every redirect hop comes through here
   again: ``httpx.Client`` with ``follow_redirects=True`` calls ``handle_request`` once per hop).
2. Whenever the pool opens a new connection, it dials through ``GuardedBackend``: the host is
   resolved ONCE, every address it resolves to is checked by ``AddressPolicy``, and the socket is
   opened to one of those checked addresses, never to the name. There is no second lookup, so a DNS
   answer that changes between check and connect (DNS rebinding) cannot reach an internal address.
   The URL keeps its host name, so TLS sends it as SNI and verifies the certificate against it, and
   pooled connections are keyed by name (an https connection verified for one name is never reused
   for another name that happens to share its address).

Wiring it is one line::

    httpx.Client(transport=GuardedTransport(policy, limits=...), timeout=..., follow_redirects=False)

(a client given a ``transport`` ignores its own ``limits``/``verify`` and mounts no proxy from the
environment, so those are given to the transport). Refusals raise ``DestinationRefused`` before any
socket is opened. Answer caps are not this module's business (``providers.base.send``).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import httpcore
import httpx

from jobs.addresses import AddressPolicy
from jobs.errors import DestinationRefused, NameNotResolved

__all__ = ["GuardedBackend", "GuardedTransport"]


class GuardedBackend(httpcore.NetworkBackend):
    """The dialer of the connection pool: resolves once, checks, connects to a checked address.

    ``dialer`` opens the sockets (``httpcore.SyncBackend`` by default); it is only ever handed an IP
    address that passed the policy, never a name, so it makes no DNS lookup of its own.
    """

    def __init__(self, policy: AddressPolicy, dialer: httpcore.NetworkBackend | None = None) -> None:
        self.policy = policy
        self.dialer = dialer if dialer is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self.policy.addresses(host, port)
        except NameNotResolved as error:
            raise httpcore.ConnectError(str(error)) from None  # httpx.ConnectError: nothing was sent
        failure: Exception | None = None
        for address in addresses:  # as socket.create_connection does: the next address if one fails
            try:
                return self.dialer.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise DestinationRefused(path, "is a unix socket; only http and https over TCP are fetched")

    def sleep(self, seconds: float) -> None:
        self.dialer.sleep(seconds)


DEFAULT_LIMITS = httpx.Limits(max_connections=50, max_keepalive_connections=20)


class GuardedTransport(httpx.BaseTransport):
    """An ``httpx.HTTPTransport`` whose every connection is dialed through ``GuardedBackend``.

    It follows no redirect itself: a client with ``follow_redirects=True`` sends each hop through
    ``handle_request`` again, so every hop is checked (scheme here, address when its connection is
    dialed). ``verify``, ``limits`` and ``retries`` are those of ``httpx.HTTPTransport``.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        verify: ssl.SSLContext | bool = True,
        trust_env: bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retries: int = 0,
        dialer: httpcore.NetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._inner = httpx.HTTPTransport(verify=verify, trust_env=trust_env, limits=limits, retries=retries)
        # httpx.HTTPTransport takes no network backend, so its pool is replaced by one that dials
        # through the guard, built as HTTPTransport builds it. Checked, so an httpx that keeps its
        # pool elsewhere fails here, loudly, rather than connecting unguarded.
        if not isinstance(getattr(self._inner, "_pool", None), httpcore.ConnectionPool):
            raise RuntimeError("httpx.HTTPTransport no longer keeps an httpcore.ConnectionPool in _pool")
        self._inner._pool.close()
        self._inner._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=trust_env),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=retries,
            network_backend=GuardedBackend(policy, dialer),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Refuse a URL that is not http(s) with a host, then send; the address is checked on dialing
        (a request on a pooled connection goes where that connection was checked to go)."""
        self.policy.target(request.url)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
