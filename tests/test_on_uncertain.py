"""``on_uncertain``: set by a YAML or JSONL header, refused with its line when it is not a policy,
overridden from the command line, and counted in the batch's status."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col

from jobs.batchfile import load_batch
from jobs.db import session_scope
from jobs.errors import BatchFileError
from jobs.models import Job
from jobs.producer import produce
from jobs.status import batch_status


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_yaml_or_jsonl_header_sets_the_policy_and_a_csv_leaves_it_to_the_default(tmp_path):
    yaml_file = write(tmp_path, "a.yaml", "on_uncertain: resubmit\njobs:\n  - {prompt: a cat, provider: gencraft}\n")
    jsonl = '{"batch": {"on_uncertain": "fail"}}\n{"prompt": "a", "provider": "gencraft"}\n'
    jsonl_file = write(tmp_path, "b.jsonl", jsonl)
    csv_file = write(tmp_path, "c.csv", "prompt,provider\na cat,gencraft\n")

    assert load_batch(yaml_file).on_uncertain == "resubmit"
    assert load_batch(jsonl_file).on_uncertain == "fail"
    assert load_batch(csv_file).on_uncertain is None


def test_a_policy_that_is_not_one_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, "a.yaml", "name: a\non_uncertain: retry\njobs:\n  - {prompt: a cat, provider: gencraft}\n")

    with pytest.raises(BatchFileError) as refused:
        load_batch(path)

    assert str(refused.value) == (
        "a.yaml:2: on_uncertain: 'retry' is not a policy for lost answers; use fail or resubmit"
    )


def test_the_command_line_wins_and_the_status_counts_lost_answers(tmp_path, engine):
    path = write(tmp_path, "a.yaml", "on_uncertain: fail\njobs:\n  - {prompt: a cat, provider: gencraft}\n"
                                     "  - {prompt: a dog, provider: gencraft}\n")  # fmt: skip
    spec = load_batch(path)

    batch = produce(engine, spec, on_uncertain="resubmit").batch
    assert batch.on_uncertain == "resubmit"
    again = produce(engine, spec, on_uncertain="fail")  # the same file: the same batch, its policy changed
    assert not again.created and again.batch.on_uncertain == "fail"

    with session_scope(engine) as session:
        session.execute(update(Job).where(col(Job.seq) == 1).values(lost_answers=1, adopted="tsk_1"))
        session.execute(update(Job).where(col(Job.seq) == 2).values(lost_answers=2, resubmits=1))
    status = batch_status(engine, batch.id)
    assert status.on_uncertain == "fail"
    assert status.lost_answers == {"uncertain": 2, "adopted": 1, "resubmitted": 1}
    assert status.to_json()["lost_answers"] == {"uncertain": 2, "adopted": 1, "resubmitted": 1}
