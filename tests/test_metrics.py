"""``genq metrics``, scraped during a sandbox run, agrees with the sandbox's own record: each account's
requests by kind, its minute, the 429s it drew; and no key appears in any line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session, col, select

from jobs.batchfile import parse_batch
from jobs.db import make_engine
from jobs.models import RATE_LIMITED, Job, JobEvent
from jobs.producer import produce
from sandbox.stats import key_id
from tests.conftest import ROOT, settings_from
from tests.test_flower import free_port
from workers.app import make_app
from workers.metrics import registry_for
from workers.runtime import Runtime

DASHBOARD = ROOT / "deploy" / "grafana" / "genq.json"

KEYS = {"girl-a": "metrics-test-key-aaaa", "girl-b": "metrics-test-key-bbbb"}
SANDBOX_RPM = 3
"""Each key's allowance at the sandbox: the run draws 429s well before the accounts' own limit."""
JOBS = 10

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def write_accounts(path: Path, base_url: str) -> None:
    accounts = [
        {"name": name, "provider": "girlgenerator", "api_key_env": f"GENQ_TEST_KEY_{name[-1].upper()}",
         "base_url": base_url, "rpm": 30, "max_in_flight": 4}
        for name in KEYS
    ]  # fmt: skip
    path.write_text(yaml.safe_dump({"accounts": accounts}))


def start_metrics(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "metrics", "--port", str(port)],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"genq metrics exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise AssertionError(f"genq metrics did not answer:\n{log.read_text()[-3000:]}")


def samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: Samples, metric: str, **labels: str) -> float:
    return scraped[(metric, tuple(sorted(labels.items())))]


def quiet_scrape(sandbox: Any, port: int, timeout: float = 90) -> tuple[str, list[dict[str, Any]]]:
    """A scrape taken while no request was under way (the record the same before it and a second
    after), with the sandbox's record of that moment; a count mid-request is off by the request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sandbox.stats()["requests"]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        time.sleep(1.0)
        after = sandbox.stats()["requests"]
        limited = {r["key_id"] for r in after if r["status"] == 429}
        if len(before) == len(after) and limited >= {key_id(key) for key in KEYS.values()}:
            return text, after
    raise AssertionError("the run never paused for its 429s long enough to read its metrics")


def test_metrics_agree_with_the_sandboxs_record(tmp_path: Path, genq_env, start_worker, sandbox_server):
    sandbox_server.reset()
    sandbox_server.configure("girlgenerator", rpm=SANDBOX_RPM, latency_mean=1.0, latency_jitter=0.0)
    write_accounts(Path(genq_env["GENQ_ACCOUNTS"]), sandbox_server.base_url("girlgenerator"))
    genq_env.update({"GENQ_TEST_KEY_A": KEYS["girl-a"], "GENQ_TEST_KEY_B": KEYS["girl-b"]})
    settings = settings_from(genq_env)
    port = free_port()
    metrics = start_metrics(genq_env, port, tmp_path / "metrics.log")
    try:
        start_worker()
        rows = "".join(f"a portrait in style {n},girlgenerator\n" for n in range(JOBS))
        engine = make_engine(settings.resolved_database_url())
        batch = produce(engine, parse_batch(f"prompt,provider\n{rows}".encode(), "portraits.csv")).batch
        make_app(settings).send_task("genq.dispatch")

        text, record = quiet_scrape(sandbox_server, port)
    finally:
        metrics.terminate()
        metrics.wait(timeout=10)

    assert not any(key in text for key in KEYS.values())
    scraped = samples(text)
    now = time.time()
    for account, key in KEYS.items():
        mine = [r for r in record if r["key_id"] == key_id(key)]
        by_kind = Counter(r["kind"] for r in mine)
        limited = Counter(r["kind"] for r in mine if r["status"] == 429)
        labels = {"account": account, "provider": "girlgenerator"}
        for kind in ("submit", "poll"):
            assert value(scraped, "genq_account_requests_total", kind=kind, **labels) == by_kind[kind], (account, kind)
            assert value(scraped, "genq_account_rate_limited_total", kind=kind, **labels) == limited[kind]
        assert sum(limited.values()) >= 1
        assert value(scraped, "genq_account_requests_last_minute", **labels) == len(
            [r for r in mine if r["t"] > now - 60]
        )
        assert value(scraped, "genq_account_requests_per_minute_limit", **labels) == 30
        assert value(scraped, "genq_account_in_flight_limit", **labels) == 4
        assert value(scraped, "genq_account_paused", reason="rate limited by the provider (429)", **labels) == 1
    jobs = {
        labels[-1][1]: count
        for (name, labels), count in scraped.items()
        if name == "genq_batch_jobs" and ("batch", str(batch.id)) in labels
    }
    assert sum(jobs.values()) == JOBS
    assert value(scraped, "genq_source_up", source="redis") == value(scraped, "genq_source_up", source="database") == 1


def test_the_collector_counts_429s_by_kind_and_credits_of_succeeded_jobs(genq_env, engine):
    """Given a batch of which two jobs (one of three pictures) succeeded on the account, and three 429s."""
    runtime = Runtime(settings_from(genq_env))
    rows = "prompt,provider,count\na fox,gencraft,3\na hare,gencraft,1\na crow,gencraft,1\n"
    batch = produce(runtime.engine, parse_batch(rows.encode(), "birds.csv")).batch
    with Session(runtime.engine) as session:
        jobs = session.exec(select(Job).where(col(Job.batch_id) == batch.id).order_by(col(Job.id))).all()
        for job in jobs[:2]:
            job.state, job.account = "succeeded", "test-gencraft"
            session.add(job)
        for detail in ("test-gencraft: submit; Retry-After 3 s", "test-gencraft: submit", "test-gencraft: poll"):
            session.add(JobEvent(job_id=jobs[0].id, event=RATE_LIMITED, detail=detail))
        session.commit()
    runtime.limiter.acquire("test-gencraft", 10, kind="submit")

    scraped = samples(generate_latest(registry_for(runtime)).decode())

    labels = {"account": "test-gencraft", "provider": "gencraft"}
    assert value(scraped, "genq_account_rate_limited_total", kind="submit", **labels) == 2
    assert value(scraped, "genq_account_rate_limited_total", kind="poll", **labels) == 1
    assert value(scraped, "genq_account_credits_spent_total", **labels) == 4
    assert value(scraped, "genq_account_requests_total", kind="submit", **labels) == 1
    assert value(scraped, "genq_account_requests_last_minute", **labels) == 1
    assert value(scraped, "genq_batch_jobs", batch=str(batch.id), name=batch.name, state="succeeded") == 2
    assert value(scraped, "genq_batch_jobs", batch=str(batch.id), name=batch.name, state="pending") == 1
    runtime.close()


def test_the_dashboard_shows_every_metric_and_only_metrics_that_exist(genq_env, engine):
    runtime = Runtime(settings_from(genq_env))
    runtime.timing.observe_finished("gencraft", None, due=5.0, previous=None)
    families = text_string_to_metric_families(generate_latest(registry_for(runtime)).decode())
    exported = {family.name + ("_total" if family.type == "counter" else "") for family in families}
    runtime.close()
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))

    shown = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"genq_[a-z_]+", target["expr"])}  # fmt: skip
    assert shown == exported
    assert [variable["name"] for variable in dashboard["templating"]["list"] if variable["type"] == "datasource"]
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])


def test_an_account_paused_by_hand_shows_as_paused_with_its_reason(genq_env, engine):
    from jobs.control import pause_account, resume_account

    runtime = Runtime(settings_from(genq_env))
    labels = {"account": "test-gencraft", "provider": "gencraft"}
    pause_account(runtime.engine, "test-gencraft", reason="provider having a bad night")

    scraped = samples(generate_latest(registry_for(runtime)).decode())
    assert value(scraped, "genq_account_paused", reason="provider having a bad night", **labels) == 1

    resume_account(runtime.engine, "test-gencraft")
    scraped = samples(generate_latest(registry_for(runtime)).decode())
    assert value(scraped, "genq_account_paused", reason="", **labels) == 0
    runtime.close()
