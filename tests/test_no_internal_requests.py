"""No request where it must not go: a picture link to loopback, a private address or the metadata
service is refused before any connection, and so is a reference URL when its batch file is loaded."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session

from jobs.accounts import load_accounts
from jobs.batchfile import load_batch
from jobs.checks import batch_problems
from jobs.db import session_scope
from jobs.errors import PictureRefused
from jobs.models import Batch, Job, ProviderTask
from jobs.settings import Settings
from workers.collect import collect_job
from workers.runtime import Runtime


@pytest.fixture
def listener():
    """A port on loopback nobody may reach: it counts the connections it is offered."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    yield server
    server.close()


def accepted(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            connection, _ = server.accept()
        except TimeoutError:
            return count
        connection.close()
        count += 1


def runtime_for(tmp_path: Path, database_url: str, redis_url: str, base_url: str) -> Runtime:
    account = {"name": "gc", "provider": "gencraft", "api_key_env": "GENQ_TEST_SSRF_KEY", "base_url": base_url,
               "rpm": 60, "max_in_flight": 4}  # fmt: skip
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump({"accounts": [account]}))
    return Runtime(Settings(database_url=database_url, redis_url=redis_url, var_dir=tmp_path,
                            accounts=tmp_path / "accounts.yaml", storage_url="memory://"))  # fmt: skip


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:{port}/latest/meta-data", "http://169.254.169.254/latest/meta-data/iam",
     "http://10.0.0.7/picture.png", "http://[::1]:{port}/x.png", "file:///etc/passwd"],
    ids=["loopback", "metadata", "private", "loopback v6", "file"],
)  # fmt: skip
def test_a_picture_link_to_where_genq_must_not_go_is_refused_for_good_unconnected(
    tmp_path, engine, database_url, clean_redis, sandbox_server, listener, monkeypatch, url: str
):
    monkeypatch.setenv("GENQ_TEST_SSRF_KEY", "k")
    runtime = runtime_for(tmp_path, database_url, clean_redis, sandbox_server.base_url("gencraft"))
    link = url.format(port=listener.getsockname()[1])
    with session_scope(engine) as session:
        batch = Batch(name="b", source="b.csv", content_hash="b", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider="gencraft", spec={"prompt": "a"}, state="collecting",
                  account="gc")  # fmt: skip
        session.add(job)
        session.flush()
        session.add(ProviderTask(job_id=job.id, index=0, account="gc", provider="gencraft", remote_id="t",
                                 state="succeeded", images=[{"url": link}]))  # fmt: skip
        job_id = job.id

    with pytest.raises(PictureRefused) as refused:
        collect_job(runtime, job_id)

    assert refused.value.final
    assert accepted(listener) == 0
    with Session(engine) as session:
        assert session.get(Job, job_id).state == "collecting"  # the task then fails it with the reason
    runtime.close()


def test_a_reference_url_genq_would_not_fetch_is_refused_when_the_file_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("GENQ_TEST_SSRF_KEY", "k")
    account = {"name": "gc", "provider": "gencraft", "api_key_env": "GENQ_TEST_SSRF_KEY",
               "base_url": "http://127.0.0.1:8700/gencraft", "rpm": 60, "max_in_flight": 4}  # fmt: skip
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump({"accounts": [account]}))
    source = tmp_path / "refs.yaml"
    source.write_text(
        "defaults: {provider: gencraft, mode: edit}\njobs:\n"
        "  - {prompt: a, references: ['file:///etc/passwd']}\n"
        "  - {prompt: b, references: ['http://127.0.0.1:6379/']}\n"
        "  - {prompt: c, references: ['not a url']}\n"
        "  - {prompt: d, references: ['http://127.0.0.1:8700/gencraft/files/ok.png']}\n"
    )

    problems = batch_problems(load_batch(source), load_accounts(tmp_path / "accounts.yaml"))

    assert [(problem.line, problem.field) for problem in problems] == [(3, "references"), (4, "references"),
                                                                        (5, "references")]  # fmt: skip
    assert "127.0.0.1 is a loopback address" in str(problems[1])
