"""A 429 to a picture's download: from the provider's own host it pauses the account for every kind
of request until its Retry-After, as a 429 to a submit or a poll does; from another host (a CDN) only
that download waits. Either way the collect is tried again no sooner than the Retry-After."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session

from jobs.db import session_scope
from jobs.models import Batch, Job, ProviderTask
from jobs.settings import Settings
from workers.runtime import Runtime
from workers.tasks import collect_step

ACCOUNT = "girl"
RETRY_AFTER = 40


class TooMany(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(429)
        self.send_header("Retry-After", str(RETRY_AFTER))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def busy_host() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TooMany)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def runtime_for(tmp_path: Path, database_url: str, redis_url: str, port: int) -> Runtime:
    """The account's own host is 127.0.0.1; ``localhost`` on the same port stands in for a CDN."""
    entry = {"name": ACCOUNT, "provider": "girlgenerator", "api_key_env": "GENQ_TEST_SANDBOX_KEY",
             "base_url": f"http://127.0.0.1:{port}", "rpm": 60, "max_in_flight": 4}  # fmt: skip
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump({"accounts": [entry]}))
    settings = Settings(database_url=database_url, redis_url=redis_url, accounts=tmp_path / "accounts.yaml",
                        var_dir=tmp_path, storage_url=f"file://{tmp_path / 'objects'}",
                        trusted_hosts=f"localhost:{port}")  # fmt: skip
    return Runtime(settings)


def collecting_job(engine, picture_url: str) -> int:
    with session_scope(engine) as session:
        batch = Batch(name="b", source="b.csv", content_hash="b", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=0, line=1, provider="girlgenerator", spec={"prompt": "a cat"},
                  state="collecting", account=ACCOUNT)  # fmt: skip
        session.add(job)
        session.flush()
        session.add(ProviderTask(job_id=job.id, index=0, account=ACCOUNT, provider="girlgenerator", remote_id="t-1",
                                 state="succeeded", images=[{"url": picture_url}]))  # fmt: skip
        assert job.id is not None
        return job.id


def test_a_429_to_a_download_from_the_providers_host_pauses_the_account(
    tmp_path, engine, database_url, clean_redis, busy_host, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "sk-test")
    runtime = runtime_for(tmp_path, database_url, clean_redis, busy_host)
    job_id = collecting_job(engine, f"http://127.0.0.1:{busy_host}/files/cat.png")

    retry_in = collect_step(runtime, job_id, attempt=0)

    standing = runtime.limiter.standing(ACCOUNT)
    assert RETRY_AFTER - 5 < standing.paused_for <= RETRY_AFTER
    assert "429" in standing.reason
    assert retry_in is not None and retry_in >= RETRY_AFTER
    with Session(engine) as session:
        job = session.get(Job, job_id)
    assert job is not None and job.state == "collecting"
    runtime.close()


def test_a_429_from_another_host_makes_only_the_download_wait(
    tmp_path, engine, database_url, clean_redis, busy_host, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "sk-test")
    runtime = runtime_for(tmp_path, database_url, clean_redis, busy_host)
    job_id = collecting_job(engine, f"http://localhost:{busy_host}/cdn/cat.png")

    retry_in = collect_step(runtime, job_id, attempt=0)

    assert runtime.limiter.standing(ACCOUNT).paused_for == 0
    assert retry_in is not None and retry_in >= RETRY_AFTER
    runtime.close()
