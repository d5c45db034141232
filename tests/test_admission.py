"""Admission: each account gets what its in-flight room and rate allow, and no job is claimed twice."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlmodel import Session, col, select

from jobs.db import session_scope
from jobs.lifecycle import JobState
from jobs.models import Batch, Job, ProviderTask
from jobs.settings import Settings
from tests.conftest import write_accounts
from workers.dispatch import dispatch
from workers.runtime import Runtime


def runtime_for(tmp_path: Path, database_url: str, redis_url: str, *, rpm: int, max_in_flight: int) -> Runtime:
    tmp_path.mkdir(parents=True, exist_ok=True)
    accounts = write_accounts(tmp_path / "accounts.yaml", {"gencraft": "http://127.0.0.1:9/gencraft"}, rpm=rpm,
                              max_in_flight=max_in_flight)  # fmt: skip
    settings = Settings(database_url=database_url, redis_url=redis_url, accounts=accounts, var_dir=tmp_path)
    return Runtime(settings)


def pending_jobs(engine, count: int, *, priority: int = 0, name: str = "b") -> list[int]:
    with session_scope(engine) as session:
        batch = Batch(name=name, source=f"{name}.csv", content_hash=name, job_count=count, priority=priority)
        session.add(batch)
        session.flush()
        jobs = [
            Job(batch_id=batch.id, seq=i, line=i + 1, provider="gencraft", spec={"prompt": f"p{i}"}, priority=priority)
            for i in range(1, count + 1)
        ]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


def states(engine) -> dict[str, int]:
    with Session(engine) as session:
        jobs = session.exec(select(Job)).all()
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state] = counts.get(job.state, 0) + 1
    return counts


def test_a_round_claims_no_more_than_the_in_flight_cap(tmp_path, engine, database_url, monkeypatch, clean_redis):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    runtime = runtime_for(tmp_path, database_url, clean_redis, rpm=100, max_in_flight=3)
    pending_jobs(engine, 10)

    assert len(dispatch(runtime)) == 3
    assert len(dispatch(runtime)) == 0  # the three still hold their places
    assert states(engine) == {"queued": 3, "pending": 7}


def test_a_round_claims_no_more_than_the_rate_allows_now(tmp_path, engine, database_url, monkeypatch, clean_redis):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    runtime = runtime_for(tmp_path, database_url, clean_redis, rpm=2, max_in_flight=50)
    pending_jobs(engine, 10)
    assert len(dispatch(runtime)) == 2


def test_higher_priority_batches_go_first(tmp_path, engine, database_url, monkeypatch, clean_redis):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    runtime = runtime_for(tmp_path, database_url, clean_redis, rpm=100, max_in_flight=2)
    pending_jobs(engine, 3, priority=0, name="overnight")
    urgent = pending_jobs(engine, 2, priority=5, name="urgent")
    assert sorted(dispatch(runtime)) == sorted(urgent)


def test_two_dispatchers_at_once_never_claim_a_job_twice(tmp_path, engine, database_url, monkeypatch, clean_redis):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    pending_jobs(engine, 200)
    runtimes = [runtime_for(tmp_path / str(n), database_url, clean_redis, rpm=1000, max_in_flight=500)
                for n in range(4)]
    claimed: list[list[int]] = []
    failures: list[BaseException] = []

    def round_(runtime: Runtime) -> None:
        try:
            claimed.append(dispatch(runtime))
        except BaseException as error:
            failures.append(error)
        finally:
            runtime.close()

    threads = [threading.Thread(target=round_, args=(runtime,)) for runtime in runtimes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    every = [job_id for ids in claimed for job_id in ids]
    assert len(every) == len(set(every))
    with Session(engine) as session:
        queued = session.exec(select(Job.id).where(col(Job.state) == JobState.QUEUED.value)).all()
    assert sorted(queued) == sorted(every)


def test_batches_of_equal_priority_share_an_account_fairly(tmp_path, engine, database_url, monkeypatch, clean_redis):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    runtime = runtime_for(tmp_path, database_url, clean_redis, rpm=100, max_in_flight=10)
    overnight = pending_jobs(engine, 500, name="overnight")
    sprites = pending_jobs(engine, 40, name="sprites")

    claimed = dispatch(runtime)

    assert len([job for job in claimed if job in overnight]) == 5
    assert len([job for job in claimed if job in sprites]) == 5


def test_a_batch_arriving_at_a_full_account_gets_the_first_place_that_frees_and_then_half(
    tmp_path, engine, database_url, monkeypatch, clean_redis
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    runtime = runtime_for(tmp_path, database_url, clean_redis, rpm=100, max_in_flight=2)
    overnight = pending_jobs(engine, 500, name="overnight")
    in_flight = dispatch(runtime)
    assert in_flight == overnight[:2]  # alone, it takes the whole account
    sprites = pending_jobs(engine, 40, name="sprites")

    # Jobs finish one at a time, oldest first, so every round has room for one job only.
    taken = []
    for _ in range(6):
        with session_scope(engine) as session:
            session.get(Job, in_flight.pop(0)).state = JobState.SUCCEEDED.value
        claimed = dispatch(runtime)
        taken += claimed
        in_flight += claimed

    assert taken == [sprites[0], overnight[2], sprites[1], overnight[3], sprites[2], overnight[4]]


def test_a_small_batch_takes_what_it_has_and_leaves_the_rest_to_the_others(
    tmp_path, engine, database_url, monkeypatch, clean_redis
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    runtime = runtime_for(tmp_path, database_url, clean_redis, rpm=100, max_in_flight=10)
    big = pending_jobs(engine, 500, name="big")
    small = pending_jobs(engine, 3, name="small")

    claimed = dispatch(runtime)

    assert sorted(job for job in claimed if job in small) == sorted(small)
    assert len([job for job in claimed if job in big]) == 7


def test_polls_due_soon_keep_their_requests_where_the_provider_counts_polls(
    tmp_path, engine, database_url, monkeypatch, clean_redis
):
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", "k")
    accounts = write_accounts(tmp_path / "accounts.yaml", {"qtpixel": "http://127.0.0.1:9/qtpixel"}, rpm=5,
                              max_in_flight=50)  # fmt: skip
    runtime = Runtime(Settings(database_url=database_url, redis_url=clean_redis, accounts=accounts, var_dir=tmp_path))
    with session_scope(engine) as session:
        batch = Batch(name="sprites", source="s.yaml", content_hash="s", job_count=20)
        session.add(batch)
        session.flush()
        running = Job(batch_id=batch.id, seq=0, line=1, provider="qtpixel", spec={"prompt": "p"}, state="running",
                      account="test-qtpixel")  # fmt: skip
        session.add(running)
        session.flush()
        # Two sprite batches of four frames, due now: two poll requests.
        session.add_all(
            ProviderTask(job_id=running.id, index=i, account="test-qtpixel", provider="qtpixel",
                         remote_id=f"b{1 + i // 4}:{100 + i}")
            for i in range(8)
        )  # fmt: skip
        session.add_all(
            Job(batch_id=batch.id, seq=i, line=i + 1, provider="qtpixel", spec={"prompt": f"p{i}"})
            for i in range(1, 20)
        )

    assert len(dispatch(runtime)) == 5 - 2
