"""A provider that repeats the key back in its error text: the key reaches no row, no log line, no
broker message, no manifest and no ``genq status --json``. Through a real worker, over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import yaml
from sqlalchemy import MetaData, select

from jobs.batchfile import load_batch
from jobs.db import make_engine
from jobs.producer import produce
from jobs.redisserver import client_url
from tests.conftest import ROOT, settings_from
from tests.test_pipeline import wait_final
from workers.app import make_app

KEY = "sk-live-ECHOED-0123456789abcdef"


class Echo(BaseHTTPRequestHandler):
    """Every request refused, gencraft's way, with the credentials it came with in the message."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        said = self.headers.get("authorization", "")
        body = json.dumps({"error": {"type": "invalid_request", "message": f"bad request for {said}"}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_key_echoed_by_the_provider_is_found_nowhere(tmp_path: Path, genq_env, echo_url, start_worker):
    account = {"name": "echo-1", "provider": "gencraft", "api_key_env": "GENQ_TEST_ECHO_KEY", "base_url": echo_url,
               "rpm": 60, "max_in_flight": 4}  # fmt: skip
    accounts = tmp_path / "echo-accounts.yaml"
    accounts.write_text(yaml.safe_dump({"accounts": [account]}))
    genq_env.update({"GENQ_ACCOUNTS": str(accounts), "GENQ_TEST_ECHO_KEY": KEY})
    source = tmp_path / "echo.csv"
    source.write_text("prompt,provider,name\na lamp,gencraft,lamp\na chair,gencraft,chair\n")
    settings = settings_from(genq_env)
    engine = make_engine(settings.resolved_database_url())
    worker = start_worker()

    batch = produce(engine, load_batch(source)).batch
    make_app(settings).send_task("genq.dispatch")
    status = wait_final(engine, batch.id)

    assert status.state == "failed"
    assert all("Bearer ***" in failure["error"] for failure in status.errors)
    places = {"the database": _database_text(engine), "the worker log": worker.log.read_text(errors="replace"),
              "Redis": _redis_text(genq_env["GENQ_REDIS_URL"]), "the manifests": _objects_text(tmp_path / "objects"),
              "genq status --json": _status_json(batch.id, genq_env)}  # fmt: skip
    assert "Bearer ***" in places["genq status --json"]
    assert [where for where, text in places.items() if KEY in text] == []


def _database_text(engine) -> str:
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as connection:
        return "\n".join(str(row) for table in tables.sorted_tables for row in connection.execute(select(table)))


def _redis_text(url: str) -> str:
    client = redis.Redis.from_url(client_url(url))
    found = []
    for key in client.scan_iter():
        kind = client.type(key).decode()
        readers = {"string": client.get, "list": lambda k: client.lrange(k, 0, -1), "hash": client.hgetall,
                   "zset": lambda k: client.zrange(k, 0, -1), "set": client.smembers}  # fmt: skip
        value = readers.get(kind, lambda k: b"")(key)
        found.append(f"{key!r} {value!r}")
    return "\n".join(found)


def _objects_text(folder: Path) -> str:
    return "\n".join(path.read_bytes().decode(errors="replace") for path in folder.rglob("*") if path.is_file())


def _status_json(batch_id: int, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "status", str(batch_id), "--json"], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout
