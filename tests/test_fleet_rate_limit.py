"""Four worker processes share one girlgenerator key of 60 requests a minute, polls included: by the
sandbox's own record, no 60-second window holds more than 60 of its requests, and none drew a 429."""

from __future__ import annotations

from pathlib import Path

from jobs.batchfile import parse_batch
from jobs.db import make_engine
from jobs.producer import produce
from sandbox.stats import busiest_minute
from tests.conftest import settings_from, write_accounts
from tests.test_pipeline import wait_final
from workers.app import make_app

RPM = 60
JOBS = 40
"""About 85 requests (a submit and one or two polls each): well past one minute's allowance."""


def test_four_workers_never_exceed_the_key_limit(tmp_path: Path, genq_env, start_worker, sandbox_server):
    sandbox_server.reset()
    sandbox_server.configure("girlgenerator", rpm=RPM, latency_mean=2.0, latency_jitter=1.0)
    write_accounts(Path(genq_env["GENQ_ACCOUNTS"]), {"girlgenerator": sandbox_server.base_url("girlgenerator")},
                   rpm=RPM, max_in_flight=8)  # fmt: skip
    # Polls spend the allowance too: start near the 2 s the pictures take rather than learn it here.
    genq_env["GENQ_FIRST_POLL_DELAY"] = "2.5"
    settings = settings_from(genq_env)
    engine = make_engine(settings.resolved_database_url())
    for number in range(4):
        start_worker(beat=number == 0, concurrency=4)

    rows = "".join(f"a portrait in style {n},girlgenerator\n" for n in range(JOBS))
    batch = produce(engine, parse_batch(f"prompt,provider\n{rows}".encode(), "portraits.csv")).batch
    make_app(settings).send_task("genq.dispatch")
    status = wait_final(engine, batch.id, timeout=300)

    assert status.state == "succeeded", status
    # Every request made with the key; picture downloads carry none.
    record = [r for r in sandbox_server.stats()["requests"] if r["provider"] == "girlgenerator" and r["key_id"]]
    assert len(record) > RPM  # the run had to wait for the window
    assert [r for r in record if r["status"] == 429] == []
    assert busiest_minute([r["t"] for r in record]) <= RPM
