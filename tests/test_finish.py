"""A batch ends with its last job: each job's end asks whether any job of its batch is still on its
way, and only the last one's finds none and writes what the batch leaves behind."""

from __future__ import annotations

from pathlib import Path

import yaml
from sqlalchemy import Engine
from sqlmodel import Session

from jobs.db import session_scope
from jobs.lifecycle import JobState, move
from jobs.models import Batch, Job
from jobs.settings import Settings
from jobs.storage import batch_folder
from workers.finish import finish_batch_if_done, job_ended
from workers.runtime import Runtime


def a_runtime(tmp_path: Path, database_url: str) -> Runtime:
    """A runtime on the test's database (migrated by the ``engine`` fixture)."""
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(yaml.safe_dump({"accounts": []}))
    return Runtime(Settings(database_url=database_url, accounts=accounts, var_dir=tmp_path,
                            storage_url=f"file://{tmp_path / 'objects'}"))  # fmt: skip


def a_batch(runtime: Runtime, states: list[JobState]) -> tuple[int, list[int]]:
    with session_scope(runtime.engine) as session:
        batch = Batch(name="ends", source="ends.csv", content_hash="ends", job_count=len(states))
        session.add(batch)
        session.flush()
        jobs = [Job(batch_id=batch.id, seq=seq, line=seq + 1, provider="gencraft", spec={"prompt": f"p{seq}"},
                    state=state.value) for seq, state in enumerate(states, start=1)]  # fmt: skip
        session.add_all(jobs)
        session.flush()
        assert batch.id is not None
        return batch.id, [job.id for job in jobs if job.id is not None]


def batch_of(runtime: Runtime, batch_id: int) -> Batch:
    with Session(runtime.engine) as session:
        batch = session.get(Batch, batch_id)
    assert batch is not None
    return batch


def test_the_batch_ends_with_its_last_job_and_not_before(tmp_path: Path, engine: Engine, database_url: str):
    runtime = a_runtime(tmp_path, database_url)
    batch_id, (done, running, collecting) = a_batch(
        runtime, [JobState.SUCCEEDED, JobState.RUNNING, JobState.COLLECTING]
    )
    job_ended(runtime, done)
    job_ended(runtime, running)  # not final: its batch is not even looked at
    assert batch_of(runtime, batch_id).state == "running"

    with session_scope(runtime.engine) as session:
        move(session, running, JobState.RUNNING, JobState.FAILED, error="refused")
    job_ended(runtime, running)
    assert batch_of(runtime, batch_id).state == "running"  # one job is still collecting

    with session_scope(runtime.engine) as session:
        move(session, collecting, JobState.COLLECTING, JobState.SUCCEEDED)
    job_ended(runtime, collecting)
    batch = batch_of(runtime, batch_id)
    assert batch.state == "failed"
    assert batch.manifest_key == f"{batch_folder(batch_id, 'ends')}/results.jsonl"
    results = runtime.storage.get(batch.manifest_key).decode().splitlines()
    assert len(results) == 3
    assert finish_batch_if_done(runtime, batch_id) is False  # finished once
    runtime.close()


def test_a_batch_of_succeeded_jobs_succeeds(tmp_path: Path, engine: Engine, database_url: str):
    runtime = a_runtime(tmp_path, database_url)
    batch_id, _ = a_batch(runtime, [JobState.SUCCEEDED, JobState.SUCCEEDED])
    assert finish_batch_if_done(runtime, batch_id) is True
    assert batch_of(runtime, batch_id).state == "succeeded"
    runtime.close()
