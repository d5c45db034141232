"""Where each account stands now, across the fleet: requests used in the last minute against its limit,
in-flight against its cap, a pause and why (a 429's, or a person's), the credits it spent today against
its daily cap, and the balance its provider last told. For ``genq status``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from jobs.accounts import Account
from jobs.control import account_pauses, credits_today
from jobs.errors import RedisUnavailable
from jobs.models import AccountBalance, utcnow
from jobs.rediscalls import talking_to_redis
from workers.dispatch import in_flight
from workers.runtime import Runtime


@dataclass(frozen=True)
class AccountReport:
    name: str
    provider: str
    rpm: int
    max_in_flight: int
    in_flight: int
    used_last_minute: int | None
    """None when the broker (which keeps the limits) does not answer."""
    paused_for: float = 0.0
    paused_because: str = ""
    out_of_rotation: bool = False
    credits_remaining: float | None = None
    credits_at: datetime | None = None
    paused_by_hand: bool = False
    """Out of rotation by ``genq account pause``: ``paused_for`` is 0 when it lasts until resumed."""
    credits_today: int = 0
    """Credits its jobs spent since midnight UTC, and hold now while claimed."""
    daily_credits: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["credits_at"] = self.credits_at.isoformat() if self.credits_at else None
        return data


def account_reports(runtime: Runtime, accounts: Mapping[str, Account]) -> list[AccountReport]:
    busy = in_flight(runtime.engine)
    now = utcnow()
    with Session(runtime.engine) as session:
        balances = {balance.account: balance for balance in session.exec(select(AccountBalance)).all()}
        by_hand = account_pauses(session)
        today = credits_today(session, list(accounts))
    reports = []
    for account in accounts.values():
        try:
            with talking_to_redis("reading the account's standing"):
                standing = runtime.limiter.standing(account.name)
        except RedisUnavailable:
            standing = None  # the report says so (``used_last_minute`` None) rather than failing
        balance = balances.get(account.name)
        paused_for = standing.paused_for if standing else 0.0
        because = standing.reason if standing else ""
        hand = by_hand.get(account.name)
        if hand is not None:
            paused_for = (hand.until - now).total_seconds() if hand.until is not None else 0.0
            because = hand.reason
        reports.append(
            AccountReport(
                name=account.name,
                provider=account.provider,
                rpm=account.rpm,
                max_in_flight=account.max_in_flight,
                in_flight=busy.get(account.name, 0),
                used_last_minute=standing.used if standing else None,
                paused_for=paused_for,
                paused_because=because,
                out_of_rotation=standing.out_of_rotation if standing else False,
                credits_remaining=balance.credits_remaining if balance else None,
                credits_at=balance.updated_at if balance else None,
                paused_by_hand=hand is not None,
                credits_today=today.get(account.name, 0),
                daily_credits=account.daily_credits,
            )
        )
    return reports
