"""Lost answers settled: found in the provider's record and adopted (gencraft's history, qtpixel's
task and batch lists), or decided by the batch's ``on_uncertain`` policy where the provider cannot
tell. Against the sandbox over HTTP, whose gateway answers a 502 page after taking the job."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.models import Asset, Batch, Job, JobEvent
from jobs.settings import Settings
from jobs.spec import JobSpec
from workers.collect import collect_job
from workers.dispatch import dispatch
from workers.polling import due_polls, poll_tasks
from workers.runtime import Runtime
from workers.settle import Settled, settle
from workers.submission import submit_job

KEY = "sk-settle"


def runtime_for(tmp_path: Path, sandbox_server, provider: str, database_url: str, redis_url: str,
                **settings: object) -> Runtime:  # fmt: skip
    account = {"name": f"settle-{provider}", "provider": provider, "api_key_env": "GENQ_TEST_SETTLE_KEY",
               "rpm": 600, "max_in_flight": 8, **sandbox_server.account_settings(provider)}  # fmt: skip
    account["rpm"] = 600
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": [account]}))
    return Runtime(Settings(database_url=database_url, redis_url=redis_url, accounts=path, var_dir=tmp_path,
                            storage_url="memory://", first_poll_delay=0.0, **settings))  # type: ignore[arg-type]  # fmt: skip


def lost_job(runtime: Runtime, sandbox_server, spec: JobSpec, *, on_uncertain: str = "fail") -> int:
    """A job sent once, taken by the provider, its answer replaced by a gateway's 502 page."""
    sandbox_server.configure(spec.provider, gateway_rate=1.0)
    with session_scope(runtime.engine) as session:
        batch = Batch(name="settle", source="settle.yaml", content_hash=spec.prompt, job_count=1,
                      on_uncertain=on_uncertain)  # fmt: skip
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider=spec.provider, name="hero",
                  spec=spec.model_dump(mode="json", exclude_defaults=True))  # fmt: skip
        session.add(job)
        session.flush()
        assert job.id is not None
        job_id = job.id
    assert dispatch(runtime) == [job_id]
    submit_job(runtime, job_id)
    assert state(runtime, job_id) == "uncertain"
    sandbox_server.configure(spec.provider, gateway_rate=0.0)
    return job_id


def state(runtime: Runtime, job_id: int) -> str:
    with Session(runtime.engine) as session:
        job = session.get(Job, job_id)
    assert job is not None
    return job.state


def events(runtime: Runtime, job_id: int) -> list[str]:
    with Session(runtime.engine) as session:
        query = select(JobEvent.event).where(col(JobEvent.job_id) == job_id).order_by(col(JobEvent.id))
        return list(session.exec(query))


def run_to_the_end(runtime: Runtime, job_id: int, timeout: float = 20) -> str:
    """Poll and collect as the workers would, until the job is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for group in due_polls(runtime):
            poll_tasks(runtime, group)
        if state(runtime, job_id) == "collecting":
            collect_job(runtime, job_id)
        if state(runtime, job_id) in ("succeeded", "failed"):
            return state(runtime, job_id)
        time.sleep(0.05)
    raise AssertionError(f"job still {state(runtime, job_id)}")


def paid_submits(sandbox_server) -> int:
    return len(sandbox_server.stats()["submissions"])


def test_a_gencraft_submit_lost_behind_a_gateway_is_found_in_the_history_and_collected(
    tmp_path, engine, database_url, clean_redis, sandbox_server, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_SETTLE_KEY", KEY)
    sandbox_server.reset()
    runtime = runtime_for(tmp_path, sandbox_server, "gencraft", database_url, clean_redis)
    job_id = lost_job(runtime, sandbox_server, JobSpec(prompt="a harbour at dawn", provider="gencraft", count=2))

    outcome = settle(runtime, job_id)

    assert outcome.settled is Settled.ADOPTED and outcome.collect
    assert run_to_the_end(runtime, job_id) == "succeeded"
    with Session(runtime.engine) as session:
        assets = session.exec(select(Asset).where(col(Asset.job_id) == job_id)).all()
        job = session.get(Job, job_id)
    assert len(assets) == 2
    assert job is not None and job.adopted is not None and job.adopted.startswith("tsk_img_")
    assert events(runtime, job_id) == ["answer lost", "adopted"]
    assert paid_submits(sandbox_server) == 1
    runtime.close()


def test_a_qtpixel_sprite_lost_behind_a_gateway_is_found_in_the_batch_list_and_polled(
    tmp_path, engine, database_url, clean_redis, sandbox_server, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_SETTLE_KEY", KEY)
    sandbox_server.reset()
    runtime = runtime_for(tmp_path, sandbox_server, "qtpixel", database_url, clean_redis)
    other = JobSpec(prompt="a pixel-art knight", provider="qtpixel", sprite="idle")
    runtime.provider("settle-qtpixel").submit(other)  # an earlier batch of the key, of another mode
    job_id = lost_job(runtime, sandbox_server, JobSpec(prompt="a pixel-art knight", provider="qtpixel", sprite="walk"))

    assert settle(runtime, job_id).settled is Settled.ADOPTED
    assert state(runtime, job_id) == "running"
    assert run_to_the_end(runtime, job_id) == "succeeded"
    with Session(runtime.engine) as session:
        frames = session.exec(select(Asset.key).where(col(Asset.job_id) == job_id).order_by(col(Asset.index))).all()
    assert [key.rsplit("/", 1)[-1] for key in frames] == [f"hero-{n}.png" for n in range(1, 5)]
    assert paid_submits(sandbox_server) == 2  # the earlier batch and the lost one: nothing sent again
    runtime.close()


def test_a_qtpixel_task_lost_behind_a_gateway_is_found_in_the_task_list(
    tmp_path, engine, database_url, clean_redis, sandbox_server, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_SETTLE_KEY", KEY)
    sandbox_server.reset()
    runtime = runtime_for(tmp_path, sandbox_server, "qtpixel", database_url, clean_redis)
    job_id = lost_job(runtime, sandbox_server, JobSpec(prompt="a pixel-art chest", provider="qtpixel"))

    assert settle(runtime, job_id).settled is Settled.ADOPTED
    assert run_to_the_end(runtime, job_id) == "succeeded"
    assert paid_submits(sandbox_server) == 1
    runtime.close()


def test_a_lost_submit_not_found_at_the_provider_fails_once_the_search_is_over(
    tmp_path, engine, database_url, clean_redis, sandbox_server, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_SETTLE_KEY", KEY)
    sandbox_server.reset()
    runtime = runtime_for(tmp_path, sandbox_server, "gencraft", database_url, clean_redis, settle_for=0.5,
                          http_timeout=0.5, lease_margin=0.1)  # searched until 2.1 s after it was sent  # fmt: skip
    job_id = lost_job(runtime, sandbox_server, JobSpec(prompt="a harbour at dusk", provider="gencraft"))
    sandbox_server.reset()  # the provider forgot it: nothing to find

    assert settle(runtime, job_id).settled is Settled.WAITING
    time.sleep(2.2)
    assert settle(runtime, job_id).settled is Settled.FAILED

    with Session(runtime.engine) as session:
        job = session.get(Job, job_id)
    assert job is not None and job.error is not None
    assert "502" in job.error and "not found at the provider" in job.error and "on_uncertain: fail" in job.error
    runtime.close()


def test_where_the_provider_cannot_tell_the_policy_fails_the_job_or_sends_it_again(
    tmp_path, engine, database_url, clean_redis, sandbox_server, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_SETTLE_KEY", KEY)
    sandbox_server.reset()
    runtime = runtime_for(tmp_path, sandbox_server, "girlgenerator", database_url, clean_redis)
    kept = lost_job(runtime, sandbox_server, JobSpec(prompt="a portrait in oils", provider="girlgenerator"))
    resent = lost_job(runtime, sandbox_server, JobSpec(prompt="a portrait in ink", provider="girlgenerator"),
                      on_uncertain="resubmit")  # fmt: skip

    assert settle(runtime, kept).settled is Settled.FAILED
    assert settle(runtime, resent).settled is Settled.RESUBMITTED

    with Session(runtime.engine) as session:
        failed = session.get(Job, kept)
    assert failed is not None and "the provider cannot tell" in (failed.error or "")
    assert dispatch(runtime) == [resent]
    submit_job(runtime, resent)
    assert run_to_the_end(runtime, resent) == "succeeded"
    assert events(runtime, resent) == ["answer lost", "resubmitted"]
    repeats = sandbox_server.stats()["repeated_submissions"]
    assert [item["prompt"] for item in repeats["items"]] == ["a portrait in ink"]  # paid twice, as the batch asked
    runtime.close()


def test_two_lost_submits_of_one_prompt_each_adopt_their_own(
    tmp_path, engine, database_url, clean_redis, sandbox_server, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_SETTLE_KEY", KEY)
    sandbox_server.reset()
    runtime = runtime_for(tmp_path, sandbox_server, "qtpixel", database_url, clean_redis)
    twins = [lost_job(runtime, sandbox_server, JobSpec(prompt="a pixel-art coin", provider="qtpixel"))
             for _ in range(2)]  # fmt: skip

    assert [settle(runtime, job_id).settled for job_id in twins] == [Settled.ADOPTED, Settled.ADOPTED]

    with Session(runtime.engine) as session:
        adopted = [session.get(Job, job_id).adopted for job_id in twins]
    assert len(set(adopted)) == 2
    assert [run_to_the_end(runtime, job_id) for job_id in twins] == ["succeeded", "succeeded"]
    runtime.close()
