"""Spend caps: a batch's ``budget`` and an account's ``daily_credits``, obeyed by admission with what
is in flight counted; a batch that reaches its budget pauses, and resuming with a higher one goes on."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import update
from sqlmodel import Session, col, select

from jobs.accounts import Account
from jobs.batchfile import parse_batch
from jobs.control import resume_batch, start_of_day
from jobs.db import make_engine, session_scope
from jobs.errors import BatchFileError, ConfigError
from jobs.models import Batch, Job, utcnow
from jobs.producer import produce
from jobs.states import BUDGET_REACHED, JobState
from jobs.status import batch_status
from tests.conftest import settings_from
from tests.test_pipeline import wait_final
from workers.app import make_app
from workers.dispatch import claim


def account(name: str = "girl-1", *, daily_credits: int | None = None) -> Account:
    return Account(name=name, provider="girlgenerator", api_key_env="K", base_url="http://127.0.0.1:9",
                   rpm=100, max_in_flight=100, daily_credits=daily_credits)  # fmt: skip


def batch_of(engine, count: int, *, budget: int | None = None, references: int = 0) -> int:
    """A girlgenerator batch: text-to-image jobs cost 1 credit, image-to-image with one reference 2."""
    refs = ",references" if references else ""
    cells = f',"{" ".join(f"https://example.com/{n}.png" for n in range(references))}"' if references else ""
    rows = "".join(f"portrait {n},girlgenerator{cells}\n" for n in range(count))
    spec = parse_batch(f"prompt,provider{refs}\n{rows}".encode(), f"b{count}-{budget}-{references}.csv")
    return produce(engine, spec, budget=budget).batch.id


def test_a_batch_with_a_budget_is_claimed_up_to_it_and_pauses(engine):
    batch_id = batch_of(engine, 15, budget=10)

    first = claim(engine, account(), 4, {})
    rest = claim(engine, account(), 50, {})

    assert len(first) == 4 and len(rest) == 6  # 10 one-credit jobs, the 4 in flight counted
    assert claim(engine, account(), 50, {}) == []
    status = batch_status(engine, batch_id)
    assert status.paused_reason == BUDGET_REACHED
    assert status.counts["pending"] == 5


def test_a_job_whose_price_would_pass_the_budget_is_not_claimed(engine):
    batch_of(engine, 4, budget=5, references=1)  # 2 credits each

    assert len(claim(engine, account(), 50, {})) == 2


def test_resuming_with_a_higher_budget_claims_again(engine):
    batch_id = batch_of(engine, 15, budget=10)
    claim(engine, account(), 50, {})

    with pytest.raises(ConfigError, match="--budget"):
        resume_batch(engine, batch_id)  # it would only pause again
    resume_batch(engine, batch_id, budget=15)

    assert len(claim(engine, account(), 50, {})) == 5
    assert batch_status(engine, batch_id).paused_reason is None


def test_a_submit_that_started_nothing_gives_its_credits_back(engine):
    batch_id = batch_of(engine, 12, budget=10)
    claimed = claim(engine, account(), 50, {})
    with session_scope(engine) as session:  # as the submit step records a documented refusal
        session.execute(update(Job).where(col(Job.id) == claimed[0]).values(state="failed", credits=0))
    resume_batch(engine, batch_id)

    assert len(claim(engine, account(), 50, {})) == 1


def test_an_account_stops_taking_jobs_at_its_daily_cap_and_another_of_the_pool_takes_them(engine):
    batch_of(engine, 10)
    capped, other = account("girl-1", daily_credits=3), account("girl-2")

    assert len(claim(engine, capped, 50, {})) == 3
    assert claim(engine, capped, 50, {}) == []
    assert len(claim(engine, other, 50, {})) == 7


def test_credits_sent_on_an_earlier_day_do_not_count_against_today(engine):
    batch_of(engine, 6)
    capped = account(daily_credits=3)
    sent = claim(engine, capped, 50, {})
    with session_scope(engine) as session:
        session.execute(update(Job).where(col(Job.id).in_(sent)).values(state="succeeded", sent_at=utcnow()))
    assert claim(engine, capped, 50, {}) == []

    with session_scope(engine) as session:
        yesterday = start_of_day() - timedelta(hours=1)
        session.execute(update(Job).where(col(Job.id).in_(sent)).values(sent_at=yesterday))
    assert len(claim(engine, capped, 50, {})) == 3


def test_the_budget_header_is_read_and_checked():
    spec = parse_batch(b"budget: 25\njobs:\n  - {prompt: a, provider: girlgenerator}\n", "b.yaml")
    assert spec.budget == 25

    with pytest.raises(BatchFileError) as refused:
        parse_batch(b"budget: -3\njobs:\n  - {prompt: a, provider: girlgenerator}\n", "b.yaml")
    [problem] = refused.value.problems
    assert (problem.line, problem.field) == (1, "budget")

    jsonl = b'{"batch": {"budget": "lots"}}\n{"prompt": "a", "provider": "girlgenerator"}\n'
    with pytest.raises(BatchFileError) as refused:
        parse_batch(jsonl, "b.jsonl")
    assert [(p.line, p.field) for p in refused.value.problems] == [(1, "budget")]


def test_daily_credits_must_be_positive(tmp_path: Path):
    from jobs.accounts import load_accounts

    entry = {"name": "g", "provider": "girlgenerator", "api_key_env": "K", "base_url": "http://x", "rpm": 10,
             "max_in_flight": 2, "daily_credits": 0}  # fmt: skip
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": [entry]}))
    with pytest.raises(ConfigError, match="daily_credits"):
        load_accounts(path, require_keys=False)


def submits_of(sandbox_server, prompt_prefix: str) -> list[dict]:
    return [s for s in sandbox_server.stats()["submissions"] if s["prompt"].startswith(prompt_prefix)]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not {what} in {timeout} s")


def test_a_budget_of_10_sends_exactly_10_submits_and_resuming_higher_finishes(
    tmp_path: Path, genq_env, start_worker, sandbox_server
):
    sandbox_server.reset()
    sandbox_server.configure("girlgenerator", rpm=600, latency_mean=0.3, latency_jitter=0.1)
    accounts = Path(genq_env["GENQ_ACCOUNTS"])
    entry = {"name": "girl-1", "provider": "girlgenerator", "api_key_env": "GENQ_TEST_SANDBOX_KEY",
             "base_url": sandbox_server.base_url("girlgenerator"), "rpm": 600, "max_in_flight": 4}  # fmt: skip
    accounts.write_text(yaml.safe_dump({"accounts": [entry]}))
    settings = settings_from(genq_env)
    engine = make_engine(settings.resolved_database_url())
    start_worker()
    rows = "".join(f"  - {{prompt: budgeted {n}, provider: girlgenerator}}\n" for n in range(16))
    batch_id = produce(engine, parse_batch(f"budget: 10\njobs:\n{rows}".encode(), "budgeted.yaml")).batch.id
    make_app(settings).send_task("genq.dispatch")

    wait_for(lambda: batch_status(engine, batch_id).paused_reason == BUDGET_REACHED, 60, "paused")
    wait_for(lambda: batch_status(engine, batch_id).counts["succeeded"] == 10, 60, "collected")
    time.sleep(3)  # rounds go on: nothing more may be sent

    assert len(submits_of(sandbox_server, "budgeted")) == 10
    status = batch_status(engine, batch_id)
    assert (status.spent, status.budget, status.counts["pending"]) == (10, 10, 6)

    resume_batch(engine, batch_id, budget=20)
    final = wait_final(engine, batch_id, timeout=90)

    assert final.state == "succeeded"
    assert len(submits_of(sandbox_server, "budgeted")) == 16
    assert final.spent == 16
    with Session(engine) as session:
        assert session.exec(select(Batch.paused_reason).where(col(Batch.id) == batch_id)).one() is None


def test_a_capped_account_hands_the_rest_to_another_of_the_pool(tmp_path: Path, genq_env, start_worker, sandbox_server):
    sandbox_server.reset()
    sandbox_server.configure("girlgenerator", rpm=600, latency_mean=0.3, latency_jitter=0.1)
    base = {"provider": "girlgenerator", "base_url": sandbox_server.base_url("girlgenerator"), "rpm": 600,
            "max_in_flight": 4}  # fmt: skip
    accounts = [
        {"name": "girl-capped", "api_key_env": "GENQ_TEST_SANDBOX_KEY", "daily_credits": 4, **base},
        {"name": "girl-open", "api_key_env": "GENQ_TEST_SANDBOX_KEY_2", **base},
    ]
    Path(genq_env["GENQ_ACCOUNTS"]).write_text(yaml.safe_dump({"accounts": accounts}))
    genq_env["GENQ_TEST_SANDBOX_KEY_2"] = "sandbox-second-key"
    settings = settings_from(genq_env)
    engine = make_engine(settings.resolved_database_url())
    start_worker()
    rows = "".join(f"pooled {n},girlgenerator\n" for n in range(12))
    batch_id = produce(engine, parse_batch(f"prompt,provider\n{rows}".encode(), "pooled.csv")).batch.id
    make_app(settings).send_task("genq.dispatch")

    final = wait_final(engine, batch_id, timeout=90)

    assert final.state == "succeeded"
    with Session(engine) as session:
        by_account = session.exec(select(Job.account, Job.state).where(col(Job.batch_id) == batch_id)).all()
    assert sum(1 for name, _ in by_account if name == "girl-capped") == 4
    assert sum(1 for name, _ in by_account if name == "girl-open") == 8
    keys = {s["key_id"] for s in submits_of(sandbox_server, "pooled")}
    assert len(keys) == 2 and len(submits_of(sandbox_server, "pooled")) == 12
    assert all(state == JobState.SUCCEEDED.value for _, state in by_account)
