"""The guarded transport: only public addresses, or an exact allow-listed host:port, are ever dialed.

Real sockets on 127.0.0.1 only. Names are mapped to addresses by an injected resolver, and every
dial goes through a recording dialer that fails the test rather than open a socket to anything but
loopback, so a guard that let a request through could not send traffic off this machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpcore
import httpx
import pytest

from jobs.addresses import AddressPolicy, check_url, system_resolve
from jobs.errors import DestinationRefused, GenqError, NameNotResolved
from workers.guard import GuardedTransport

# --- the pieces: servers, a listener that counts, a dialer that records ---------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    """``/redirect?to=URL`` answers 302 to URL; anything else 200 ``ok``. Records path and Host."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, Server)
        server.seen.append((self.path, self.headers.get("Host", "")))
        query = parse_qs(urlsplit(self.path).query)
        if urlsplit(self.path).path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, str]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    with serving(Server()) as running:
        yield running


class Listener:
    """A socket listening on 127.0.0.1 that never answers: ``connections()`` counts what reached it.

    A TCP connect completes into the listen backlog without an ``accept``, so a client that dialed
    it would be waiting there; an empty backlog means nothing connected.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])

    def connections(self) -> int:
        self.sock.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def listener() -> Iterator[Listener]:
    listening = Listener()
    yield listening
    listening.sock.close()


class RecordingDialer(httpcore.NetworkBackend):
    """Opens real sockets, to 127.0.0.1 only; records every address it is handed.

    ``internet`` stands in for a public host: a dial to that address is recorded and carried to the
    local ``(127.0.0.1, port)`` instead, so a test can play a public server without leaving loopback.
    """

    def __init__(self, internet: dict[str, int] | None = None) -> None:
        self.dialed: list[tuple[str, int]] = []
        self.internet = internet or {}
        self.backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        self.dialed.append((host, port))
        if host in self.internet:
            host, port = "127.0.0.1", self.internet[host]
        if host != "127.0.0.1":
            raise AssertionError(f"the guard let a connection to {host}:{port} through")
        return self.backend.connect_tcp(host, port, timeout, local_address, socket_options)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise AssertionError("no unix socket is ever dialed")

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


class Names:
    """An injected resolver: a fixed table, counting lookups, never DNS."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return list(self.table.get(host, []))


def client_for(
    policy: AddressPolicy, dialer: httpcore.NetworkBackend | None = None, verify: ssl.SSLContext | bool = True
) -> httpx.Client:
    """A client as the runtime builds it: the guarded transport, no redirects followed."""
    transport = GuardedTransport(policy, dialer=dialer, verify=verify)
    return httpx.Client(transport=transport, timeout=5.0, follow_redirects=False)


# --- schemes and URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("file:///etc/passwd", "file: URLs are refused"),
        ("ftp://example.com/pub/x.png", "example.com: ftp: URLs are refused"),
        ("gopher://example.com/", "gopher: URLs are refused"),
        ("not a url", "'not a url' is not an absolute http or https URL"),
        ("/relative/path.png", "is not an absolute http or https URL"),
        ("http:///no-host", "http: URL with no host"),
        ("http://[not-v6]/", "'http://\\[not-v6\\]/' is not a URL"),
        ("http://host:abc/", "is not a URL"),
        ("http://host:99999/", "host port 99999 is not a TCP port"),
    ],
)
def test_only_absolute_http_and_https_urls(url: str, words: str) -> None:
    names = Names({})
    with pytest.raises(DestinationRefused, match=words):
        check_url(url, AddressPolicy(resolve=names))
    assert names.lookups == []  # refused from the URL alone, before any lookup


@pytest.mark.parametrize("url", ["ftp://example.com/x", "gopher://example.com/", "file:///etc/passwd"])
def test_the_transport_refuses_other_schemes_before_dialing(url: str) -> None:
    dialer = RecordingDialer()
    transport = GuardedTransport(AddressPolicy(resolve=Names({"example.com": ["93.184.216.34"]})), dialer=dialer)
    with pytest.raises(DestinationRefused, match="only http and https"):
        transport.handle_request(httpx.Request("GET", url))
    assert dialer.dialed == []


def test_a_refusal_is_a_genq_error() -> None:
    assert issubclass(DestinationRefused, GenqError)
    assert not issubclass(DestinationRefused, httpx.HTTPError)  # never mistaken for a lost answer


# --- addresses ------------------------------------------------------------------------------------

REFUSED = [
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10", "a loopback address"),
    ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("169.254.10.10", "a link-local address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("100.64.1.1", "a carrier-grade NAT address (100.64.0.0/10)"),
    ("0.0.0.0", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("198.18.0.1", "a private address"),  # benchmarking, not public
    ("::1", "a loopback address"),
    ("fd12:3456::1", "a private address"),
    ("fc00::1", "a private address"),
    ("fe80::1", "a link-local address"),
    ("fe80::1%eth0", "a link-local address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("ff02::1", "a multicast address"),
    ("::", "an unspecified address"),
    ("::ffff:127.0.0.1", "an IPv4-mapped form of 127.0.0.1, a loopback address"),
    ("::ffff:10.0.0.1", "an IPv4-mapped form of 10.0.0.1, a private address"),
    ("::ffff:169.254.169.254", "an IPv4-mapped form of 169.254.169.254, a cloud metadata address"),
    ("64:ff9b::a9fe:a9fe", "a NAT64 form of 169.254.169.254, a cloud metadata address"),
    ("2002:a00:1::1", "a 6to4 form of 10.0.0.1, a private address"),
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_a_name_resolving_to_an_internal_address_is_refused_without_connecting(address: str, why: str) -> None:
    names = Names({"images.example.com": [address]})
    dialer = RecordingDialer()
    with client_for(AddressPolicy(resolve=names), dialer) as client, pytest.raises(DestinationRefused) as caught:
        client.get("https://images.example.com/picture.png")
    assert str(caught.value) == f"images.example.com resolves to {address}, {why}"
    assert dialer.dialed == []
    assert names.lookups == ["images.example.com"]  # resolved once


@pytest.mark.parametrize(("address", "why"), [(a, w) for a, w in REFUSED if "%" not in a])
def test_an_internal_address_written_in_the_url_is_refused(address: str, why: str) -> None:
    host = f"[{address}]" if ":" in address else address
    dialer = RecordingDialer()
    names = Names({})
    with client_for(AddressPolicy(resolve=names), dialer) as client, pytest.raises(DestinationRefused) as caught:
        client.get(f"http://{host}/latest/meta-data/")
    assert str(caught.value) == f"{address} is {why}"
    assert dialer.dialed == []
    assert names.lookups == []  # a literal address needs no lookup


@pytest.mark.parametrize("host", ["localhost", "2130706433", "0x7f.1", "0x7f000001", "127.1"])
def test_other_spellings_of_loopback_are_refused_by_what_they_resolve_to(host: str, listener: Listener) -> None:
    # The real resolver: getaddrinfo reads these as 127.0.0.1 (numeric forms, /etc/hosts), no DNS.
    with client_for(AddressPolicy(resolve=system_resolve)) as client, pytest.raises(DestinationRefused) as caught:
        client.get(f"http://{host}:{listener.port}/")
    assert "a loopback address" in str(caught.value)
    assert listener.connections() == 0


def test_refused_before_any_connection_is_made(listener: Listener) -> None:
    """The plain transport, no recording dialer: the listener on 127.0.0.1 is never reached."""
    with client_for(AddressPolicy()) as client:
        for url in (f"http://127.0.0.1:{listener.port}/", f"http://[::ffff:127.0.0.1]:{listener.port}/"):
            with pytest.raises(DestinationRefused, match="loopback"):
                client.get(url)
    assert listener.connections() == 0


def test_every_answer_is_checked_not_just_the_first() -> None:
    names = Names({"mixed.example.com": ["93.184.216.34", "10.0.0.1"]})
    dialer = RecordingDialer()
    with (
        client_for(AddressPolicy(resolve=names), dialer) as client,
        pytest.raises(DestinationRefused, match=re.escape("resolves to 10.0.0.1, a private address")),
    ):
        client.get("http://mixed.example.com/")
    assert dialer.dialed == []


def test_a_public_address_is_dialed_by_address_not_by_name(server: Server) -> None:
    names = Names({"images.example.com": ["93.184.216.34"]})
    dialer = RecordingDialer(internet={"93.184.216.34": server.port})
    with client_for(AddressPolicy(resolve=names), dialer) as client:
        response = client.get("http://images.example.com/picture.png")
    assert response.status_code == 200
    assert response.url == "http://images.example.com/picture.png"
    assert dialer.dialed == [("93.184.216.34", 80)]
    assert server.seen == [("/picture.png", "images.example.com")]


def test_the_next_checked_address_is_tried_when_one_refuses_the_connection(server: Server) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = int(closed.getsockname()[1])
    closed.close()  # nothing listens there: connecting is refused
    names = Names({"images.example.com": ["93.184.216.34", "93.184.216.35"]})
    dialer = RecordingDialer(internet={"93.184.216.34": closed_port, "93.184.216.35": server.port})
    with client_for(AddressPolicy(resolve=names), dialer) as client:
        assert client.get("http://images.example.com/").status_code == 200
    assert dialer.dialed == [("93.184.216.34", 80), ("93.184.216.35", 80)]
    assert names.lookups == ["images.example.com"]


def test_the_refusal_names_the_host_never_the_path_query_or_password() -> None:
    names = Names({"meta.example.com": ["169.254.169.254"]})
    with (
        client_for(AddressPolicy(resolve=names), RecordingDialer()) as client,
        pytest.raises(DestinationRefused) as caught,
    ):
        client.get("http://user:hunter2@meta.example.com/latest/credentials?X-Amz-Signature=abc123")
    message = str(caught.value)
    assert message == "meta.example.com resolves to 169.254.169.254, a cloud metadata address"
    assert caught.value.host == "meta.example.com"
    for secret in ("hunter2", "abc123", "credentials", "user"):
        assert secret not in message


def test_a_name_that_does_not_resolve() -> None:
    policy = AddressPolicy(resolve=Names({}))
    with pytest.raises(NameNotResolved, match=re.escape("nowhere.example.com does not resolve")):
        check_url("https://nowhere.example.com/x.png", policy)
    # Fetching, it is a connection that could not be made (a DNS failure may pass), not a refusal.
    dialer = RecordingDialer()
    with client_for(policy, dialer) as client, pytest.raises(httpx.ConnectError, match="does not resolve"):
        client.get("https://nowhere.example.com/x.png")
    assert dialer.dialed == []


def test_check_url_passes_a_public_reference() -> None:
    names = Names({"cdn.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})
    check_url("https://cdn.example.com/ref.png", AddressPolicy(resolve=names))
    assert names.lookups == ["cdn.example.com"]


# --- the allow-list -------------------------------------------------------------------------------


def test_an_allowed_host_port_is_reached_over_real_http(server: Server) -> None:
    for policy in (
        AddressPolicy(base_urls=[f"http://127.0.0.1:{server.port}/v1"]),
        AddressPolicy(trusted=[f"127.0.0.1:{server.port}"]),
    ):
        with client_for(policy) as client:
            response = client.get(f"http://127.0.0.1:{server.port}/picture.png")
        assert response.status_code == 200
        assert response.text == "ok"
    assert [path for path, _ in server.seen] == ["/picture.png", "/picture.png"]


def test_the_same_host_on_another_port_is_refused(server: Server, listener: Listener) -> None:
    policy = AddressPolicy(base_urls=[f"http://127.0.0.1:{server.port}"])
    with (
        client_for(policy) as client,
        pytest.raises(DestinationRefused, match=re.escape("127.0.0.1 is a loopback address")),
    ):
        client.get(f"http://127.0.0.1:{listener.port}/")
    assert listener.connections() == 0


def test_allowed_names_connect_to_the_checked_address(server: Server) -> None:
    """DNS rebinding: the name is resolved once and the socket goes to that answer; the server still
    sees the name in Host. A second lookup (which would answer the metadata address) never happens."""
    answers = iter([["127.0.0.1"]])
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers, ["169.254.169.254"])

    dialer = RecordingDialer()
    policy = AddressPolicy(trusted=[f"allowed.test:{server.port}"], resolve=rebinding)
    with client_for(policy, dialer) as client:
        response = client.get(f"http://allowed.test:{server.port}/hello")
    assert response.status_code == 200
    assert server.seen == [("/hello", f"allowed.test:{server.port}")]
    assert dialer.dialed == [("127.0.0.1", server.port)]
    assert lookups == ["allowed.test"]


def test_rebinding_after_the_check_cannot_reach_an_internal_address(server: Server) -> None:
    """A public answer is checked and dialed; the attacker's next answer (metadata) is never asked for."""
    answers = iter([["93.184.216.34"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers, ["169.254.169.254"])

    dialer = RecordingDialer(internet={"93.184.216.34": server.port})
    with client_for(AddressPolicy(resolve=rebinding), dialer) as client:
        assert client.get("http://rebind.example.com/").status_code == 200
        assert client.get("http://rebind.example.com/again").status_code == 200  # the pooled connection
    assert dialer.dialed == [("93.184.216.34", 80)]
    assert [host for _, host in server.seen] == ["rebind.example.com", "rebind.example.com"]


def test_an_international_name_is_checked_and_allowed_in_its_ascii_form(server: Server) -> None:
    names = Names({"xn--bcher-kva.test": ["127.0.0.1"]})
    policy = AddressPolicy(trusted=[f"bücher.test:{server.port}"], resolve=names)
    assert policy.is_allowed("xn--bcher-kva.test", server.port)
    with client_for(policy, RecordingDialer()) as client:
        assert client.get(f"http://bücher.test:{server.port}/").status_code == 200
    assert names.lookups == ["xn--bcher-kva.test"]
    with pytest.raises(DestinationRefused, match=re.escape("xn--bcher-kva.test resolves to 127.0.0.1")):
        check_url(f"http://bücher.test:{server.port + 1}/", AddressPolicy(resolve=names))


def test_allow_list_entries() -> None:
    policy = AddressPolicy(
        base_urls=["http://127.0.0.1:8000/v1", "https://API.Example.com/v2", "http://sandbox.test"],
        trusted=["[::1]:9000", "Redis.Internal.:6379", " "],
    )
    assert policy.allowed == {
        ("127.0.0.1", 8000),
        ("api.example.com", 443),
        ("sandbox.test", 80),
        ("::1", 9000),
        ("redis.internal", 6379),
    }
    assert policy.is_allowed("API.example.com.", 443)
    assert not policy.is_allowed("api.example.com", 80)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.trusted = ("evil:1",)  # type: ignore[misc]
    hash(policy)


@pytest.mark.parametrize("entry", ["no-port", "host:", ":80", "::1:80", "host:99999", "host:http", "ftp://x:21"])
def test_a_bad_allow_list_entry_is_refused_at_start(entry: str) -> None:
    with pytest.raises(ValueError, match="allow-list entry"):
        AddressPolicy(trusted=[entry])


def test_an_allowed_name_is_allowed_on_its_port_only(listener: Listener) -> None:
    names = Names({"sandbox.test": ["127.0.0.1"]})
    policy = AddressPolicy(trusted=["sandbox.test:1"], resolve=names)
    with client_for(policy) as client, pytest.raises(DestinationRefused, match=re.escape("resolves to 127.0.0.1")):
        client.get(f"http://sandbox.test:{listener.port}/")
    assert listener.connections() == 0


def test_proxies_from_the_environment_are_not_used(
    server: Server, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client given a transport mounts no HTTP_PROXY: a proxy would dial where the guard cannot see."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{listener.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with client_for(AddressPolicy(trusted=[f"127.0.0.1:{server.port}"])) as client:
        assert client.get(f"http://127.0.0.1:{server.port}/").status_code == 200
    assert listener.connections() == 0


# --- redirects ------------------------------------------------------------------------------------


class CountingTransport(GuardedTransport):
    def __init__(self, policy: AddressPolicy) -> None:
        super().__init__(policy)
        self.hops: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.hops.append(str(request.url))
        return super().handle_request(request)


def test_httpx_sends_every_redirect_hop_through_the_transport(server: Server) -> None:
    transport = CountingTransport(AddressPolicy(trusted=[f"127.0.0.1:{server.port}"]))
    base = f"http://127.0.0.1:{server.port}"
    with httpx.Client(transport=transport, follow_redirects=True, timeout=5.0) as client:
        response = client.get(f"{base}/redirect?to=/landed")
    assert response.status_code == 200
    assert [str(r.url) for r in response.history] == [f"{base}/redirect?to=/landed"]
    assert transport.hops == [f"{base}/redirect?to=/landed", f"{base}/landed"]


def test_a_redirect_to_an_internal_address_is_refused_at_the_second_hop(server: Server, listener: Listener) -> None:
    transport = CountingTransport(AddressPolicy(trusted=[f"127.0.0.1:{server.port}"]))
    base = f"http://127.0.0.1:{server.port}"
    target = f"http://127.0.0.1:{listener.port}/"
    with (
        httpx.Client(transport=transport, follow_redirects=True, timeout=5.0) as client,
        pytest.raises(DestinationRefused, match=re.escape("127.0.0.1 is a loopback address")),
    ):
        client.get(f"{base}/redirect?to={target}")
    assert transport.hops == [f"{base}/redirect?to={target}", target]
    assert [path for path, _ in server.seen] == [f"/redirect?to={target}"]
    assert listener.connections() == 0


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("file:///etc/passwd", "file: URLs are refused"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "gopher: URLs are refused"),
    ],
)
def test_a_redirect_off_the_public_internet_is_refused(server: Server, target: str, words: str) -> None:
    dialer = RecordingDialer()
    policy = AddressPolicy(trusted=[f"127.0.0.1:{server.port}"])
    with (
        httpx.Client(transport=GuardedTransport(policy, dialer=dialer), follow_redirects=True) as client,
        pytest.raises(DestinationRefused, match=words),
    ):
        client.get(f"http://127.0.0.1:{server.port}/redirect?to={target}")
    assert dialer.dialed == [("127.0.0.1", server.port)]


def test_without_following_the_redirect_is_handed_back_and_its_next_hop_is_checked(server: Server) -> None:
    policy = AddressPolicy(trusted=[f"127.0.0.1:{server.port}"])
    with client_for(policy) as client:
        response = client.get(f"http://127.0.0.1:{server.port}/redirect?to=http://10.0.0.1/")
        assert response.status_code == 302
        assert response.next_request is not None
        with pytest.raises(DestinationRefused, match=re.escape("10.0.0.1 is a private address")):
            client.send(response.next_request)


# --- https: the name is sent as SNI and verified, the socket goes to the checked address ------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("tls")

    def make(*names: str) -> tuple[Path, Path]:
        stem = "-".join(names)
        cert, key = folder / f"{stem}.pem", folder / f"{stem}.key"
        san = ",".join(f"DNS:{name}" for name in names)
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={names[0]}"),
                *("-addext", f"subjectAltName={san}"),
            ],
            check=True,
            capture_output=True,
        )
        return cert, key

    return make


def _tls_server(cert: Path, key: Path, sni: list[str]) -> Server:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name or "")  # type: ignore[assignment,misc,return-value]
    server = Server()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def test_https_verifies_the_name_while_dialing_the_checked_address(
    certificates: Callable[..., tuple[Path, Path]],
) -> None:
    cert, key = certificates("a.test", "b.test")
    sni: list[str] = []
    with serving(_tls_server(cert, key, sni)) as server:
        names = Names({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
        policy = AddressPolicy(trusted=[f"a.test:{server.port}", f"b.test:{server.port}"], resolve=names)
        dialer = RecordingDialer()
        verify = ssl.create_default_context(cafile=str(cert))
        with client_for(policy, dialer, verify=verify) as client:
            for name in ("a.test", "b.test", "a.test"):
                assert client.get(f"https://{name}:{server.port}/").status_code == 200
        # Both names share one address, yet each has its own connection, verified for its own name
        # (the pool is keyed by name), and the third request reuses a.test's connection.
        assert sni == ["a.test", "b.test"]
        assert dialer.dialed == [("127.0.0.1", server.port), ("127.0.0.1", server.port)]
        assert [host for _, host in server.seen] == [f"{n}:{server.port}" for n in ("a.test", "b.test", "a.test")]


def test_https_refuses_a_certificate_for_another_name(certificates: Callable[..., tuple[Path, Path]]) -> None:
    cert, key = certificates("other.test")
    with serving(_tls_server(cert, key, [])) as server:
        policy = AddressPolicy(trusted=[f"a.test:{server.port}"], resolve=Names({"a.test": ["127.0.0.1"]}))
        verify = ssl.create_default_context(cafile=str(cert))
        with (
            client_for(policy, RecordingDialer(), verify=verify) as client,
            pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|match"),
        ):
            client.get(f"https://a.test:{server.port}/")
        assert server.seen == []
