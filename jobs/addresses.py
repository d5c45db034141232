"""Where genq may fetch from: public addresses, and an exact ``host:port`` allow-list.

A provider answer or a batch file names URLs we did not choose (a picture to download, a reference
image, a redirect), so each one could point at the worker's own network: the cloud metadata service
(169.254.169.254 hands out credentials), Redis, the database, an admin page on localhost.
``AddressPolicy`` is the one rule for all of them: only an absolute ``http``/``https`` URL with a
host, whose every resolved address is public.

An exact ``host:port`` on the allow-list (each account's own ``base_url``, so the sandbox on
127.0.0.1 works, and ``GENQ_TRUSTED_HOSTS``) skips the address check, and only that: the same host
on another port is checked like any other.

The rule lives here, beside the batch files, because it is applied twice: to reference URLs when a
batch file is loaded (``check_url``, so a refused file writes nothing), and to every connection when
a request is sent (``workers.guard``, which dials only the addresses this policy returned). URLs are
read by ``httpx.URL`` both times, the parser that sends them, so the two checks never read one URL
two ways. Refusals raise ``DestinationRefused``; the message names the host and why, never the path
or query (a signed URL's query is a credential).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

from jobs.errors import DestinationRefused, NameNotResolved

__all__ = ["AddressPolicy", "check_url", "refusal", "system_resolve"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses`` as strings, the way ``socket.getaddrinfo`` answers; injectable so a
test can map a public-looking name to 10.0.0.1 without DNS."""

SCHEMES: dict[str, int] = {"http": 80, "https": 443}
"""The only schemes genq fetches, with the port each defaults to."""

METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
"""Cloud instance metadata services: they hand credentials to whoever asks from the machine."""

SHARED = ipaddress.ip_network("100.64.0.0/10")
"""Carrier-grade NAT space (RFC 6598): neither private nor public; clouds put internal services there."""

NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""The well-known NAT64 prefix (RFC 6052): on a NAT64 network 64:ff9b::a9fe:a9fe is 169.254.169.254."""


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host``, in its order, without repeats."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in answers))


def refusal(address: Address) -> str | None:
    """Why ``address`` must not be fetched from ("a link-local address"), or None when it is public.

    Named ranges come from ``ipaddress``. An IPv6 address that carries an IPv4 one (IPv4-mapped,
    NAT64, 6to4) reaches that IPv4 address, so it is judged by it. Whatever else is not globally
    reachable (benchmarking, documentation ranges...) is refused by the final ``is_global`` test.
    """
    if address in METADATA:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        for form, embedded in (
            ("an IPv4-mapped", address.ipv4_mapped),
            ("a NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in NAT64 else None),
            ("a 6to4", address.sixtofour),
        ):
            if embedded is not None:
                why = refusal(embedded)
                return f"{form} form of {embedded}, {why}" if why else None
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address in SHARED:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _normal(host: str) -> str:
    """One spelling per host, for the allow-list: lower case, no trailing dot, IPv6 compressed, and
    an international name in its ASCII (IDNA) form, the one the connection pool dials by."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if not host.isascii():  # one that cannot be encoded is left as it is: it matches no entry
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    literal = _literal(host)
    return str(literal) if literal is not None else host


def _url_target(url: str | httpx.URL) -> tuple[str, int]:
    """The ``(host, port)`` an http(s) URL connects to (port defaulted from the scheme), else refused."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise DestinationRefused("", f"{str(url)[:80]!r} is not a URL") from None
    if not parsed.scheme:
        raise DestinationRefused("", f"{str(url)[:80]!r} is not an absolute http or https URL")
    if parsed.scheme not in SCHEMES:
        reason = f"{parsed.scheme}: URLs are refused; only http and https are fetched"
        raise DestinationRefused("", f"{parsed.host}: {reason}" if parsed.host else reason)
    if not parsed.host:
        raise DestinationRefused("", f"{parsed.scheme}: URL with no host is refused")
    port = parsed.port or SCHEMES[parsed.scheme]
    if not 0 < port < 65536:
        raise DestinationRefused(parsed.host, f"port {port} is not a TCP port")
    return _normal(parsed.raw_host.decode("ascii")), port


def _host_port(entry: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a URL (port defaulted from its scheme), as the allow-list keeps it."""
    if "://" in entry:
        try:
            return _url_target(entry)
        except DestinationRefused as error:
            raise ValueError(f"allow-list entry {entry!r}: {error}") from None
    host, _, port = entry.strip().rpartition(":")
    bare_v6 = ":" in host and not (host.startswith("[") and host.endswith("]"))
    if not host or bare_v6 or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"allow-list entry {entry!r} is not host:port (an IPv6 host is written [::1]:8080)")
    return _normal(host), int(port)


@dataclass(frozen=True)
class AddressPolicy:
    """Which destinations genq may connect to: public addresses, plus an exact ``host:port`` allow-list.

    ``base_urls`` are the accounts' own ``base_url`` values (each allows its host:port, so a sandbox on
    127.0.0.1:PORT works); ``trusted`` are ``GENQ_TRUSTED_HOSTS`` entries, ``host:port`` each. Being
    allowed is by the exact pair: 127.0.0.1:8000 allowed says nothing of 127.0.0.1:6379.
    """

    base_urls: Iterable[str] = ()
    trusted: Iterable[str] = ()
    resolve: Resolver = system_resolve
    allowed: frozenset[tuple[str, int]] = field(init=False)

    def __post_init__(self) -> None:
        # Kept as tuples so a frozen policy stays hashable and cannot change under a running worker.
        object.__setattr__(self, "base_urls", tuple(self.base_urls))
        object.__setattr__(self, "trusted", tuple(self.trusted))
        pairs = [_host_port(entry) for entry in (*self.base_urls, *self.trusted) if entry.strip()]
        object.__setattr__(self, "allowed", frozenset(pairs))

    def is_allowed(self, host: str, port: int) -> bool:
        """Whether ``host:port`` is on the allow-list (and so skips the address check)."""
        return (_normal(host), port) in self.allowed

    def target(self, url: str | httpx.URL) -> tuple[str, int]:
        """The ``(host, port)`` of an http(s) URL; ``DestinationRefused`` for any other URL. No DNS."""
        return _url_target(url)

    def addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once and return its addresses, each checked; the only ones to connect to.

        Every address must pass: a name answering one public and one private address is refused, as
        a connection may go to either. An allow-listed ``host:port`` is resolved but not checked.
        """
        shown, host = host, _normal(host)  # messages name the host as the URL wrote it
        literal = _literal(host)
        answers = [host] if literal is not None else self.resolve(host, port)
        if not answers:
            raise NameNotResolved(shown, "does not resolve to any address")
        if self.is_allowed(host, port):
            return answers
        for answer in answers:
            address = _literal(answer.split("%", 1)[0])
            why = "not an IP address" if address is None else refusal(address)
            if why is not None:
                raise DestinationRefused(shown, f"is {why}" if literal is not None else f"resolves to {answer}, {why}")
        return answers


def check_url(url: str, policy: AddressPolicy) -> None:
    """Refuse, with the reason, a URL genq would not fetch: for the batch-file loader's reference URLs.

    Resolves the host now (a name that does not resolve is refused too); the fetch itself is checked
    again by ``GuardedTransport`` when it connects, so passing here is never what lets a request out.
    """
    policy.addresses(*policy.target(url))
