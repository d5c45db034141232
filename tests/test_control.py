"""Control over a run: a batch paused, resumed and canceled, an account paused by hand. All of it is a
row in the database, obeyed by the next admission round for the whole fleet."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import update
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from jobs.accounts import Account
from jobs.batchfile import parse_batch
from jobs.cli import app
from jobs.control import cancel_batch, pause_account, pause_batch, resume_account, resume_batch
from jobs.db import make_engine, session_scope
from jobs.errors import ConfigError
from jobs.models import Job, ProviderTask
from jobs.producer import produce
from jobs.spec import JobSpec
from jobs.states import JobState, TaskState
from jobs.status import batch_status
from tests.conftest import _database_params, settings_from
from tests.test_pipeline import wait_final
from workers.app import make_app
from workers.dispatch import claim
from workers.providers.base import Started, TaskFailed
from workers.providers.qtpixel import Qtpixel


def account(name: str = "girl-1") -> Account:
    return Account(name=name, provider="girlgenerator", api_key_env="K", base_url="http://127.0.0.1:9",
                   rpm=100, max_in_flight=100)  # fmt: skip


def batch_of(engine, count: int, name: str = "b") -> int:
    rows = "".join(f"{name} {n},girlgenerator\n" for n in range(count))
    return produce(engine, parse_batch(f"prompt,provider\n{rows}".encode(), f"{name}.csv")).batch.id


def states(engine, batch_id: int) -> dict[str, int]:
    return {state: count for state, count in batch_status(engine, batch_id).counts.items() if count}


# Admission, without Celery ------------------------------------------------------------------------


def test_a_paused_batch_has_nothing_claimed_and_a_resumed_one_does(engine):
    paused, other = batch_of(engine, 3, "paused"), batch_of(engine, 2, "other")
    pause_batch(engine, paused)

    claimed = claim(engine, account(), 10, {})

    assert len(claimed) == 2 and states(engine, other) == {"queued": 2}
    resume_batch(engine, paused)
    assert len(claim(engine, account(), 10, {})) == 3


def test_pausing_a_batch_puts_its_queued_jobs_back_to_waiting(engine):
    batch_id = batch_of(engine, 4)
    claim(engine, account(), 3, {})

    assert pause_batch(engine, batch_id) == 3

    assert states(engine, batch_id) == {"pending": 4}
    with Session(engine) as session:
        assert session.exec(select(Job.credits).where(col(Job.credits).is_not(None))).all() == []


def test_an_account_paused_by_hand_takes_nothing_and_the_pool_goes_on(engine):
    batch_of(engine, 4)
    pause_account(engine, "girl-1", reason="a bad night at the provider")

    assert claim(engine, account("girl-1"), 10, {}) == []
    assert len(claim(engine, account("girl-2"), 10, {})) == 4


def test_an_account_pause_for_a_while_ends_by_itself(engine):
    batch_of(engine, 2)
    pause_account(engine, "girl-1", seconds=0.3)
    assert claim(engine, account(), 10, {}) == []

    time.sleep(0.4)

    assert len(claim(engine, account(), 10, {})) == 2


def test_an_account_resumed_by_hand_takes_jobs_again(engine):
    batch_of(engine, 2)
    pause_account(engine, "girl-1")

    assert resume_account(engine, "girl-1") is True
    assert len(claim(engine, account(), 10, {})) == 2
    assert resume_account(engine, "girl-1") is False


def test_cancel_ends_what_waits_and_leaves_what_runs_to_be_collected(engine):
    batch_id = batch_of(engine, 6)
    [running, *_] = claim(engine, account(), 3, {})
    with session_scope(engine) as session:
        session.execute(update(Job).where(col(Job.id) == running).values(state=JobState.RUNNING.value))

    canceled = cancel_batch(engine, batch_id)

    assert (canceled.waiting, canceled.running) == (5, 0)
    assert states(engine, batch_id) == {"canceled": 5, "running": 1}
    assert claim(engine, account(), 10, {}) == []
    with pytest.raises(ConfigError, match="canceled"):
        resume_batch(engine, batch_id)


def test_cancel_running_ends_the_running_tasks_unpolled(engine):
    batch_id = batch_of(engine, 2)
    [first, _] = claim(engine, account(), 2, {})
    with session_scope(engine) as session:
        session.execute(update(Job).where(col(Job.id) == first).values(state=JobState.RUNNING.value))
        session.add(ProviderTask(job_id=first, index=0, account="girl-1", provider="girlgenerator", remote_id="t-1"))

    canceled = cancel_batch(engine, batch_id, running=True)

    assert (canceled.waiting, canceled.running, canceled.tasks) == (1, 1, (("girl-1", "t-1"),))
    assert states(engine, batch_id) == {"canceled": 2}
    with Session(engine) as session:
        task = session.exec(select(ProviderTask)).one()
    assert task.state == TaskState.FAILED.value  # the sweeper polls running tasks only


def test_a_final_batch_cannot_be_paused_or_canceled(engine):
    batch_id = batch_of(engine, 1)
    cancel_batch(engine, batch_id)
    with pytest.raises(ConfigError):
        pause_batch(engine, batch_id)
    with pytest.raises(ConfigError):
        cancel_batch(engine, batch_id)


# The provider side of a cancel ------------------------------------------------------------------


@pytest.fixture
def qtpixel(sandbox_server) -> Iterator[Qtpixel]:
    base = sandbox_server.base_url("qtpixel")
    qt = Account(name="qt", provider="qtpixel", api_key_env="UNUSED", base_url=base, rpm=60, max_in_flight=4)
    with httpx.Client(timeout=5) as client:
        yield Qtpixel(client, qt, "gpa_control_key")


def test_qtpixel_deletes_a_canceled_task_and_a_sprite_frame_at_the_provider(qtpixel: Qtpixel):
    single = qtpixel.submit(JobSpec(prompt="a coin", provider="qtpixel"))
    frames = qtpixel.submit(JobSpec(prompt="a knight", provider="qtpixel", sprite="idle"))
    assert isinstance(single, Started) and isinstance(frames, Started)

    assert qtpixel.delete(single.task_ids[0]) and qtpixel.delete(frames.task_ids[0])
    assert qtpixel.delete(single.task_ids[0])  # gone already: deleted all the same

    statuses = qtpixel.poll([single.task_ids[0]]) | qtpixel.poll(list(frames.task_ids))
    assert isinstance(statuses[single.task_ids[0]], TaskFailed)
    assert isinstance(statuses[frames.task_ids[0]], TaskFailed)
    assert not isinstance(statuses[frames.task_ids[1]], TaskFailed)


# The commands ----------------------------------------------------------------------------------


def test_account_pause_for_a_while_is_shown_by_status(tmp_path: Path, genq_env, sandbox_server):
    runner = CliRunner()
    paused = runner.invoke(app, ["account", "pause", "test-gencraft", "--for", "30m", "--reason", "flaky tonight"])
    assert paused.exit_code == 0, paused.output

    shown = runner.invoke(app, ["status", "--json"])

    [report] = [a for a in yaml.safe_load(shown.output)["accounts"] if a["name"] == "test-gencraft"]
    assert report["paused_by_hand"] is True and report["paused_because"] == "flaky tonight"
    assert 29 * 60 < report["paused_for"] <= 30 * 60
    assert runner.invoke(app, ["account", "pause", "nobody"]).exit_code == 2
    assert runner.invoke(app, ["account", "pause", "test-gencraft", "--for", "soon"]).exit_code == 2
    assert "resumed" in runner.invoke(app, ["account", "resume", "test-gencraft"]).output


# With real workers and the sandbox ---------------------------------------------------------------


def submits(sandbox_server, after: float = 0.0) -> list[dict]:
    record = sandbox_server.stats()["requests"]
    return [r for r in record if r["provider"] == "girlgenerator" and r["kind"] == "submit" and r["t"] > after]


def polls(sandbox_server, after: float) -> list[dict]:
    record = sandbox_server.stats()["requests"]
    return [r for r in record if r["provider"] == "girlgenerator" and r["kind"] == "poll" and r["t"] > after]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not {what} in {timeout} s")


@pytest.mark.parametrize("database_url", _database_params()[-1:], indirect=True)
def test_pause_resume_and_cancel_a_running_batch(tmp_path: Path, genq_env, start_worker, sandbox_server):
    """30 girlgenerator jobs at 10 requests a minute: paused after its first submits, nothing of it is
    sent for 60 s while what runs is collected; resumed, it goes on; canceled, the rest is canceled,
    nothing more is sent, and the batch ends with its results."""
    sandbox_server.reset()
    sandbox_server.configure("girlgenerator", rpm=10, latency_mean=2.0, latency_jitter=0.5)
    entry = {"name": "girl-1", "provider": "girlgenerator", "api_key_env": "GENQ_TEST_SANDBOX_KEY",
             "base_url": sandbox_server.base_url("girlgenerator"), "rpm": 10, "max_in_flight": 4}  # fmt: skip
    Path(genq_env["GENQ_ACCOUNTS"]).write_text(yaml.safe_dump({"accounts": [entry]}))
    genq_env["GENQ_FIRST_POLL_DELAY"] = "2.5"
    settings = settings_from(genq_env)
    engine = make_engine(settings.resolved_database_url())
    start_worker()
    batch_id = batch_of(engine, 30, "catalog")
    make_app(settings).send_task("genq.dispatch")
    runner = CliRunner()

    wait_for(lambda: len(submits(sandbox_server)) >= 2, 30, "submitted")
    assert runner.invoke(app, ["pause", str(batch_id)]).exit_code == 0
    paused_at = time.time()
    sent_before = len(submits(sandbox_server))
    time.sleep(60)

    assert submits(sandbox_server, after=paused_at) == []
    assert polls(sandbox_server, after=paused_at) != []
    # Every paid job is collected while paused (its polls wait their turn at 10 a minute).
    wait_for(lambda: batch_status(engine, batch_id).counts["succeeded"] == sent_before, 30, "collected")
    assert batch_status(engine, batch_id).paused and submits(sandbox_server, after=paused_at) == []
    shown = runner.invoke(app, ["status", str(batch_id)])
    assert "paused" in shown.output and f"genq resume {batch_id}" in shown.output

    assert runner.invoke(app, ["resume", str(batch_id)]).exit_code == 0
    resumed_at = time.time()
    wait_for(lambda: submits(sandbox_server, after=resumed_at) != [], 30, "sent again")

    canceled = runner.invoke(app, ["cancel", str(batch_id)])
    assert canceled.exit_code == 0, canceled.output
    canceled_at = time.time()
    final = wait_final(engine, batch_id, timeout=75)  # what runs is collected, its polls at 10 a minute
    time.sleep(2)  # a few more rounds: nothing more may be sent

    assert final.state == "canceled" and final.manifest_key is not None
    assert submits(sandbox_server, after=canceled_at) == []
    assert final.counts["canceled"] > 0
    assert final.counts["canceled"] + final.counts["succeeded"] == 30
    assert len(submits(sandbox_server)) == final.counts["succeeded"]  # every job sent was collected
