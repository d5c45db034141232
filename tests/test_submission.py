"""Workers answered at the same moment for one account must not collide on its balance row."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

from sqlmodel import Session, select

from jobs.db import session_scope
from jobs.models import AccountBalance
from workers.submission import record_balance

WORKERS = 8


def test_balances_said_at_once_by_many_workers_all_land_on_one_row(engine):
    together = Barrier(WORKERS)

    def record(credits: int) -> None:
        with session_scope(engine) as session:
            together.wait()
            record_balance(session, "portraits", "girlgenerator", credits)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(record, range(WORKERS)))  # an error in any thread is raised here

    with Session(engine) as session:
        [balance] = session.exec(select(AccountBalance)).all()
    assert (balance.account, balance.provider) == ("portraits", "girlgenerator")
    assert balance.credits_remaining in range(WORKERS)


def test_a_later_balance_replaces_the_earlier_one(engine):
    for credits in (40, 38):
        with session_scope(engine) as session:
            record_balance(session, "portraits", "girlgenerator", credits)
    with Session(engine) as session:
        assert session.get(AccountBalance, "portraits").credits_remaining == 38
