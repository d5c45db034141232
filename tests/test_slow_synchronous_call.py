"""A talecraft call takes as long as its picture: longer than ``stale_after`` is no lost answer. Its
job holds a lease as long as the call's own time-out, so the reconciler, running all along, leaves
it alone, and the picture is stored. Through a real worker with its beat."""

from __future__ import annotations

import time

import yaml
from sqlmodel import Session, select

from jobs.batchfile import load_batch
from jobs.db import make_engine
from jobs.models import Asset, Job
from jobs.producer import produce
from tests.conftest import SANDBOX_KEY, settings_from
from tests.test_pipeline import wait_final
from workers.app import make_app

SLOW = 4.0
"""Seconds the picture takes: twice ``stale_after``, longer than a shared lease, eight reconciler passes."""


def test_a_call_longer_than_stale_after_still_ends_with_its_picture(
    tmp_path, genq_env, sandbox_server, start_worker
):
    sandbox_server.configure("talecraft", latency_mean=SLOW)
    account = {"name": "tale-1", "provider": "talecraft", "api_key_env": "GENQ_TEST_SANDBOX_KEY", "rpm": 60,
               "max_in_flight": 2, **sandbox_server.account_settings("talecraft")}  # fmt: skip
    account["options"] = {"timeout": "30"}
    accounts = tmp_path / "talecraft-accounts.yaml"
    accounts.write_text(yaml.safe_dump({"accounts": [account]}))
    # The shared lease (1 s each to connect, write and read) is shorter than the picture: only the
    # call's own time-out, which its lease follows, keeps the reconciler off it.
    genq_env.update({"GENQ_ACCOUNTS": str(accounts), "GENQ_STALE_AFTER": "2", "GENQ_RECONCILE_INTERVAL": "0.5",
                     "GENQ_HTTP_TIMEOUT": "1", "GENQ_LEASE_MARGIN": "0"})  # fmt: skip
    source = tmp_path / "story.yaml"
    source.write_text("jobs:\n  - {name: page-1, prompt: a fox reading by candlelight, provider: talecraft}\n")
    settings = settings_from(genq_env)
    engine = make_engine(settings.resolved_database_url())
    start_worker()

    batch = produce(engine, load_batch(source)).batch
    started = time.monotonic()
    make_app(settings).send_task("genq.dispatch")
    status = wait_final(engine, batch.id, timeout=60)

    assert time.monotonic() - started > SLOW
    assert status.state == "succeeded", status
    with Session(engine) as session:
        [job] = session.exec(select(Job)).all()
        assets = session.exec(select(Asset)).all()
    assert (job.lost_answers, job.error) == (0, None)
    assert len(assets) == 1
    submits = [r for r in sandbox_server.stats()["requests"] if r["kind"] == "submit"]
    assert len(submits) == 1
    assert SANDBOX_KEY not in str(sandbox_server.stats())
