"""An account whose key is refused leaves rotation for the whole fleet; its jobs go to the others."""

from __future__ import annotations

import yaml
from sqlmodel import Session

from jobs.db import session_scope
from jobs.models import Batch, Job
from jobs.settings import Settings
from workers.dispatch import dispatch
from workers.fleet import account_reports
from workers.runtime import Runtime
from workers.submission import submit_job


def test_a_refused_key_sends_its_job_back_to_another_account(tmp_path, engine, database_url, clean_redis,
                                                             sandbox_server, monkeypatch):  # fmt: skip
    sandbox_server.reset()
    monkeypatch.setenv("GENQ_TEST_BAD_KEY", "invalid-revoked")
    monkeypatch.setenv("GENQ_TEST_GOOD_KEY", "sk-good")
    accounts = [
        {"name": name, "provider": "gencraft", "api_key_env": env, "base_url": sandbox_server.base_url("gencraft"),
         "rpm": 60, "max_in_flight": 1}
        for name, env in (("revoked", "GENQ_TEST_BAD_KEY"), ("good", "GENQ_TEST_GOOD_KEY"))
    ]  # fmt: skip
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump({"accounts": accounts}))
    runtime = Runtime(Settings(database_url=database_url, redis_url=clean_redis, accounts=tmp_path / "accounts.yaml",
                               var_dir=tmp_path))  # fmt: skip
    with session_scope(engine) as session:
        batch = Batch(name="b", source="b.csv", content_hash="b", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider="gencraft", spec={"prompt": "a", "provider": "gencraft"})
        session.add(job)
        session.flush()
        job_id = job.id

    [claimed] = dispatch(runtime)
    assert claimed == job_id
    with Session(engine) as session:
        assert session.get(Job, job_id).account == "revoked"  # the first account with room

    submit_job(runtime, job_id)

    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert (job.state, job.account, job.attempts) == ("pending", None, 0)
    standing = runtime.limiter.standing("revoked")
    assert standing.out_of_rotation and standing.reason == "the provider refused its key"
    assert "invalid-revoked" not in (job.error or "")

    reports = {report.name: report for report in account_reports(runtime, runtime.accounts)}
    assert reports["revoked"].out_of_rotation and reports["revoked"].paused_because == "the provider refused its key"
    assert reports["revoked"].used_last_minute == 1 and reports["good"].paused_for == 0

    assert dispatch(runtime) == [job_id]
    with Session(engine) as session:
        assert session.get(Job, job_id).account == "good"
    submit_job(runtime, job_id)
    with Session(engine) as session:
        assert session.get(Job, job_id).state == "running"
    runtime.close()
