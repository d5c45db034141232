"""Two batches of equal priority on one account: the second makes progress from the moment it
arrives, beside the first, rather than after it. Through a real worker and the sandbox."""

from __future__ import annotations

import time
from pathlib import Path

from sqlmodel import Session, col, select

from jobs.batchfile import parse_batch
from jobs.db import make_engine
from jobs.models import Job, ProviderTask
from jobs.producer import produce
from tests.conftest import settings_from, write_accounts
from tests.test_pipeline import wait_final
from workers.app import make_app

ARRIVAL_GAP = 8.0
"""Seconds between the two batches (a minute in the story; the admission rule does not care)."""


def batch(name: str, jobs: int) -> bytes:
    return ("prompt,provider\n" + "".join(f"{name} picture {n},gencraft\n" for n in range(jobs))).encode()


def test_a_batch_arriving_later_shares_the_account_at_once(tmp_path: Path, genq_env, start_worker, sandbox_server):
    sandbox_server.reset()
    sandbox_server.configure("gencraft", latency_mean=0.5)
    write_accounts(Path(genq_env["GENQ_ACCOUNTS"]), {"gencraft": sandbox_server.base_url("gencraft")},
                   rpm=240, max_in_flight=2)  # fmt: skip
    settings = settings_from(genq_env)
    engine = make_engine(settings.resolved_database_url())
    start_worker()
    sender = make_app(settings)

    overnight = produce(engine, parse_batch(batch("overnight", 200), "overnight.csv")).batch
    sender.send_task("genq.dispatch")
    time.sleep(ARRIVAL_GAP)
    sprites = produce(engine, parse_batch(batch("sprites", 16), "sprites.csv")).batch
    arrived = time.time()
    sender.send_task("genq.dispatch")
    assert wait_final(engine, sprites.id, timeout=120).state == "succeeded"

    with Session(engine) as session:
        submits = session.exec(
            select(Job.batch_id, ProviderTask.submitted_at)
            .join(ProviderTask, col(ProviderTask.job_id) == col(Job.id))
            .order_by(col(ProviderTask.submitted_at))
        ).all()
    before = [batch_id for batch_id, at in submits if at.timestamp() < arrived]
    after = [batch_id for batch_id, at in submits if at.timestamp() >= arrived]
    assert before and set(before) == {overnight.id}  # the first batch had the account to itself
    last_sprite = max(i for i, batch_id in enumerate(after) if batch_id == sprites.id)
    shared = after[: last_sprite + 1]
    # While the sprites ran, the two batches took turns: neither waited for the other to finish.
    assert shared.count(sprites.id) == 16
    assert shared.count(overnight.id) >= 16 * 0.6
    assert after.index(sprites.id) <= 2
