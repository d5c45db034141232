"""Steps that run at the same moment in two processes: the last two provider tasks of one job ended
by two polls at once, and two dispatch rounds admitting to one account at once. On PostgreSQL, where
they truly overlap (SQLite lets one writer through at a time)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import yaml
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.models import Batch, Job, ProviderTask
from jobs.settings import Settings
from workers.dispatch import dispatch
from workers.polling import PollResult, end_task
from workers.providers.base import Finished, Image
from workers.runtime import Runtime

ROUNDS = 15
CAP = 3


def runtime_for(tmp_path: Path, database_url: str, redis_url: str) -> Runtime:
    account = {"name": "gc", "provider": "gencraft", "api_key_env": "GENQ_TEST_STEP_KEY",
               "base_url": "http://127.0.0.1:9", "rpm": 6000, "max_in_flight": CAP}  # fmt: skip
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
            job = Job(batch_id=batch.id, seq=seq, line=seq + 1, provider="gencraft", spec={"prompt": f"kite {seq}"},
                      state=state, account="gc" if state != "pending" else None)  # fmt: skip
            session.add(job)
            session.flush()
            assert job.id is not None
            ids.append(job.id)
            for index in range(tasks):
                session.add(ProviderTask(job_id=job.id, index=index, account="gc", provider="gencraft",
                                         remote_id=f"task_{seq}_{index}"))  # fmt: skip
    return ids


def test_two_polls_ending_the_last_two_tasks_of_a_job_at_once_move_it(
    tmp_path, engine, database_url, clean_redis, monkeypatch
):
    monkeypatch.setenv("GENQ_TEST_STEP_KEY", "k")
    runtimes = [runtime_for(tmp_path, database_url, clean_redis) for _ in range(2)]
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
            end_task(runtime, task, Finished((Image(f"http://127.0.0.1:9/{task.remote_id}.png"),)), result)
            return result

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(finish, zip(runtimes, by_job[job_id], strict=True)))
        ready += [found for result in results for found in result.ready]

    with Session(engine) as session:
        states = session.exec(select(Job.state).where(col(Job.id).in_(job_ids))).all()
    assert states == ["collecting"] * ROUNDS
    assert sorted(ready) == sorted(job_ids)  # each job handed to collect exactly once
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
