"""A submit whose answer is lost after the request left ends ``uncertain`` and is never sent again;
only the provider's own documented "nothing started" error is sent again. For every adapter, over
real HTTP: a gateway's 502 page, a 504, a time-out and a cut body."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlmodel import Session, select

from jobs.db import session_scope
from jobs.models import Batch, Job, JobEvent
from jobs.settings import Settings
from sandbox.state import UPSTREAM_ERROR_TRIGGER
from tests.conformance import Recipe, recipes
from tests.rawhttp import ANSWERS, RawServer
from workers.dispatch import dispatch
from workers.runtime import Runtime
from workers.submission import submit_job

RECIPES = recipes()
KEY = "sk-lost-answers"


def runtime_for(tmp_path: Path, recipe: Recipe, base_url: str, database_url: str, redis_url: str) -> Runtime:
    options = dict(recipe.account_options)
    if recipe.provider == "talecraft":
        options["timeout"] = "0.5"  # its own wait for the picture, here as short as the others'
    account = {
        "name": f"lost-{recipe.provider}", "provider": recipe.provider, "api_key_env": "GENQ_TEST_LOST_KEY",
        "base_url": recipe.base_url(base_url), "rpm": 600, "max_in_flight": 4, "options": options,
    }  # fmt: skip
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": [account]}))
    settings = Settings(database_url=database_url, redis_url=redis_url, accounts=path, var_dir=tmp_path,
                        http_timeout=0.5)  # fmt: skip
    return Runtime(settings)


def queued_job(runtime: Runtime, recipe: Recipe, prompt: str | None = None) -> int:
    spec = recipe.ok if prompt is None else recipe.ok.model_copy(update={"prompt": prompt})
    with session_scope(runtime.engine) as session:
        batch = Batch(name="lost", source="lost.yaml", content_hash=recipe.provider, job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider=recipe.provider, spec=spec.model_dump(mode="json"))
        session.add(job)
        session.flush()
        assert job.id is not None
        job_id = job.id
    assert dispatch(runtime) == [job_id]
    return job_id


def stored(runtime: Runtime, job_id: int) -> Job:
    with Session(runtime.engine) as session:
        job = session.get(Job, job_id)
    assert job is not None
    return job


@pytest.mark.parametrize("failure", list(ANSWERS))
@pytest.mark.parametrize("recipe", RECIPES, ids=[r.provider for r in RECIPES])
def test_a_lost_answer_leaves_the_job_uncertain_and_nothing_is_sent_again(
    tmp_path, recipe: Recipe, failure: str, engine, database_url, clean_redis, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_LOST_KEY", KEY)
    with RawServer(ANSWERS[failure]) as server:
        runtime = runtime_for(tmp_path, recipe, server.url, database_url, clean_redis)
        job_id = queued_job(runtime, recipe)

        after = submit_job(runtime, job_id)
        submit_job(runtime, job_id)  # the same message delivered again
        assert dispatch(runtime) == []  # and admission has nothing to send either

        job = stored(runtime, job_id)
        assert (job.state, job.lost_answers, job.attempts) == ("uncertain", 1, 0)
        assert after.wait is None and not after.collect
        assert server.requests == 1
        assert job.error and "may have been taken" in job.error and KEY not in job.error
        with Session(runtime.engine) as session:
            events = session.exec(select(JobEvent).where(JobEvent.job_id == job_id)).all()
        assert [event.event for event in events] == ["answer lost"]
        runtime.close()


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.provider for r in RECIPES])
def test_the_providers_own_server_error_is_sent_again_and_any_other_is_not(
    tmp_path, recipe: Recipe, engine, database_url, clean_redis, sandbox_server, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_LOST_KEY", KEY)
    sandbox_server.reset()
    runtime = runtime_for(tmp_path, recipe, sandbox_server.base_url(recipe.provider), database_url, clean_redis)
    job_id = queued_job(runtime, recipe, prompt=f"a cat {UPSTREAM_ERROR_TRIGGER}")

    submit_job(runtime, job_id)

    job = stored(runtime, job_id)
    if recipe.documents_server_errors:
        # Nothing started, in the provider's own words: back to admission, which sends it again.
        assert (job.state, job.attempts) == ("pending", 1)
        assert dispatch(runtime) == [job_id]
        submit_job(runtime, job_id)
        submits = sum(1 for r in sandbox_server.stats()["requests"] if r["kind"] == "submit")
        assert submits == 2
    else:
        # No published error body: a 5xx may hide a job the service took.
        assert job.state == "uncertain"
    runtime.close()
