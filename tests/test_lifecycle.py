"""The job state machine: every move is a compare-and-set, and only the drawn moves exist."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from jobs.db import session_scope
from jobs.lifecycle import ALLOWED, FINAL, IllegalTransition, JobState, move
from jobs.models import Batch, Job


def a_job(engine, state: JobState = JobState.PENDING) -> int:
    with session_scope(engine) as session:
        batch = Batch(name="b", source="b.csv", content_hash="h", job_count=1)
        session.add(batch)
        session.flush()
        job = Job(batch_id=batch.id, seq=1, line=2, provider="gencraft", spec={"prompt": "p"}, state=state.value)
        session.add(job)
        session.flush()
        return job.id


def test_a_move_happens_once_and_a_repeat_finds_it_moved(engine):
    job_id = a_job(engine, JobState.QUEUED)
    with session_scope(engine) as session:
        assert move(session, job_id, JobState.QUEUED, JobState.SUBMITTING) is True
    with session_scope(engine) as session:
        assert move(session, job_id, JobState.QUEUED, JobState.SUBMITTING) is False
    with Session(engine) as session:
        assert session.get(Job, job_id).state == "submitting"


def test_a_move_writes_its_values_in_the_same_statement(engine):
    job_id = a_job(engine)
    with session_scope(engine) as session:
        move(session, job_id, JobState.PENDING, JobState.FAILED, error="refused: no")
    with Session(engine) as session:
        job = session.get(Job, job_id)
    assert (job.state, job.error) == ("failed", "refused: no")


def test_moves_the_machine_does_not_have_are_refused(engine):
    job_id = a_job(engine)
    with session_scope(engine) as session, pytest.raises(IllegalTransition):
        move(session, job_id, JobState.PENDING, JobState.SUCCEEDED)


def test_final_states_lead_nowhere():
    for state in FINAL:
        assert ALLOWED[state] == frozenset()
    assert set(ALLOWED) == set(JobState)
