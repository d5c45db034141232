"""Steps that run at the same moment in two processes: the last two provider tasks of one job ended
by two polls at once (the job is then collected and ends succeeded with both pictures), and two
dispatch rounds admitting to one account at once. On PostgreSQL, where they truly overlap (SQLite
lets one writer through at a time)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import yaml
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.models import Asset, Batch, Job, ProviderTask
from jobs.settings import Settings
from workers.collect import collect_job
from workers.dispatch import dispatch
from workers.finish import job_ended
from workers.polling import PollResult, end_task
from workers.providers.base import Finished, Image
from workers.runtime import Runtime

ROUNDS = 15
CAP = 3


def runtime_for(tmp_path: Path, database_url: str, redis_url: str, base_url: str = "http://127.0.0.1:9") -> Runtime:
    account = {"name": "gc", "provider": "gencraft", "api_key_env": "GENQ_TEST_STEP_KEY",
               "base_url": base_url, "rpm": 6000, "max_in_flight": CAP}  # fmt: skip
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": [account]}))
    return Runtime(Settings(database_url=database_url, redis_url=redis_url, accounts=path, var_dir=tmp_path))


def a_batch(engine, jobs: int, *, state: str = "pending", tasks: int = 0) -> list[int]:
    with session_scope(engine) as session:
        batch = Batch(name="steps", source="steps.yaml", content_hash=f"steps-{jobs}-{state}", job_count=jobs)
        session.add(batch)
        session.flush()
        ids = []
        for seq in range(1, jobs + 1):
            job = Job(batch_id=batch.id, seq=seq, line=seq + 1, provider="gencraft",
                      spec={"prompt": f"kite {seq}", "provider": "gencraft"}, state=state,
                      account="gc" if state != "pending" else None)  # fmt: skip
            session.add(job)
            session.flush()
            assert job.id is not None
            ids.append(job.id)
            for index in range(tasks):
                session.add(ProviderTask(job_id=job.id, index=index, account="gc", provider="gencraft",
                                         remote_id=f"task_{seq}_{index}"))  # fmt: skip
    return ids


def test_two_polls_ending_the_last_two_tasks_of_a_job_at_once_end_it_succeeded(
    tmp_path, engine, database_url, clean_redis, sandbox_server, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_STEP_KEY", "k")
    runtimes = [runtime_for(tmp_path, database_url, clean_redis, sandbox_server.base_url("gencraft"))
                for _ in range(2)]  # fmt: skip
    job_ids = a_batch(engine, ROUNDS, state="running", tasks=2)
    with Session(engine) as session:
        tasks = session.exec(select(ProviderTask).order_by(col(ProviderTask.id))).all()
    by_job = {job_id: [task for task in tasks if task.job_id == job_id] for job_id in job_ids}

    ready: list[int] = []
    for job_id in job_ids:
        together = Barrier(2)

        def finish(pair: tuple[Runtime, ProviderTask], together: Barrier = together) -> PollResult:
            runtime, task = pair
            result = PollResult()
            together.wait()
            picture = Image(f"{sandbox_server.url}/_sandbox/samples/{task.remote_id}.png")
            end_task(runtime, task, Finished((picture,)), result)
            return result

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(finish, zip(runtimes, by_job[job_id], strict=True)))
        ready += [found for result in results for found in result.ready]

    assert sorted(ready) == sorted(job_ids)  # each job handed to collect exactly once
    for job_id in ready:  # what the collect task each poll sends does
        collect_job(runtimes[0], job_id)
        job_ended(runtimes[0], job_id)

    with Session(engine) as session:
        states = session.exec(select(Job.state).where(col(Job.id).in_(job_ids))).all()
        assets = session.exec(select(Asset).where(col(Asset.job_id).in_(job_ids))).all()
        batch = session.exec(select(Batch)).one()
    assert states == ["succeeded"] * ROUNDS
    assert sorted((asset.job_id, asset.index) for asset in assets) == [(j, i) for j in sorted(job_ids) for i in (0, 1)]
    for asset in assets:  # both pictures of every job are in storage, as recorded
        assert hashlib.sha256(runtimes[0].storage.get(asset.key)).hexdigest() == asset.sha256
    assert batch.state == "succeeded"
    for runtime in runtimes:
        runtime.close()


def test_two_dispatchers_at_once_never_exceed_an_accounts_cap(tmp_path, engine, database_url, clean_redis,
                                                               monkeypatch):  # fmt: skip
    monkeypatch.setenv("GENQ_TEST_STEP_KEY", "k")
    runtimes = [runtime_for(tmp_path, database_url, clean_redis) for _ in range(2)]
    a_batch(engine, 60)
    most = 0
    admitted = 0
    for _ in range(ROUNDS):
        together = Barrier(2)

        def round_(runtime: Runtime, together: Barrier = together) -> list[int]:
            together.wait()
            return dispatch(runtime)

        with ThreadPoolExecutor(2) as pool:
            admitted += sum(len(queued) for queued in pool.map(round_, runtimes))
        with Session(engine) as session:
            in_flight = session.exec(select(func.count()).where(col(Job.state) == "queued")).one()
        most = max(most, in_flight)
        with session_scope(engine) as session:  # one of them finishes: a place frees
            first = session.exec(select(Job.id).where(col(Job.state) == "queued").limit(1)).first()
            session.execute(update(Job).where(col(Job.id) == first).values(state="succeeded"))

    assert most == CAP
    assert admitted == CAP + ROUNDS - 1  # every place that freed was taken again
    for runtime in runtimes:
        runtime.close()
