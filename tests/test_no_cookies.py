"""A provider or a CDN that sets a cookie never gets it back: genq's clients keep no cookies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import yaml

from jobs.settings import Settings
from workers.runtime import Runtime


class SetsACookie(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cookies_seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.cookies_seen.append(self.headers.get("Cookie"))
        self.send_response(200)
        self.send_header("Set-Cookie", "session=abc; Path=/")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def cookie_host() -> Iterator[int]:
    SetsACookie.cookies_seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SetsACookie)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_cookie_set_by_a_host_is_never_sent_back(tmp_path, monkeypatch, cookie_host):
    monkeypatch.setenv("GENQ_TEST_KEY", "sk-test")
    entry = {"name": "girl", "provider": "girlgenerator", "api_key_env": "GENQ_TEST_KEY",
             "base_url": f"http://127.0.0.1:{cookie_host}", "rpm": 60, "max_in_flight": 4}  # fmt: skip
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump({"accounts": [entry]}))
    runtime = Runtime(Settings(accounts=tmp_path / "accounts.yaml", var_dir=tmp_path))
    for client in (runtime.client("girl"), runtime.http, runtime.client("girl"), runtime.http):
        answer = client.get(f"http://127.0.0.1:{cookie_host}/picture.png")
        assert answer.headers["set-cookie"] == "session=abc; Path=/"
    assert SetsACookie.cookies_seen == [None, None, None, None]
