"""What a person reads in the terminal: durations at a glance, a time left that does not swing, counts
that add up, tables that fit 80 columns, and failures named or grouped."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from jobs.progress import EtaEstimate, describe
from jobs.render import accounts_table, batches_table, duration, print_failures
from jobs.states import JobState
from jobs.status import BatchStatus
from workers.fleet import AccountReport


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (45.4, "45s"), (59.6, "1m 00s"), (270, "4m 30s"), (3599, "59m 59s"), (3720, "1h 02m"),
     (86400 + 60, "24h 01m")],
)  # fmt: skip
def test_durations_read_at_a_glance(seconds: float, shown: str):
    assert duration(seconds) == shown


def status(*, total: int = 40, name: str = "catalog", failures: int = 0, **counts: int) -> BatchStatus:
    every = {state.value: 0 for state in JobState}
    every.update(counts)
    every[JobState.FAILED.value] = failures
    errors = [
        {"job": n, "line": n + 1, "name": f"row-{n}", "error": f"reason {n % 3}"} for n in range(min(failures, 10))
    ]
    reasons = [{"reason": f"reason {r}", "jobs": len(range(r, failures, 3))} for r in range(min(failures, 3))]
    return BatchStatus(
        id=7, name=name, source="x.csv", state="running", priority=0, total=total, counts=every,
        errors=errors, failure_reasons=reasons,
    )  # fmt: skip


def test_the_counts_shown_add_up_to_the_batch():
    s = status(total=40, succeeded=13, failures=4, running=5, queued=2, collecting=1, pending=15)

    shown = describe(s, rate=0.5, left=270)

    assert "13 ok" in shown and "4 failed" in shown and "8 running" in shown and "15 waiting" in shown
    assert 13 + 4 + 8 + 15 == 40
    assert "30.0/min" in shown and "4m 30s left" in shown


def test_the_time_left_follows_the_recent_rate_not_the_whole_run():
    eta = EtaEstimate(window=60, started=0)
    for t in range(0, 121, 5):  # two minutes of nothing finishing (the first wave generating)
        eta.update(float(t), 0, 100)
    done = 0
    for t in range(125, 300, 5):  # then one job every 5 s
        done += 1
        left = eta.update(float(t), done, 100)

    assert left is not None
    assert (100 - done) * 5 * 0.8 < left < (100 - done) * 5 * 1.2


def test_the_time_left_does_not_swing_with_one_burst_of_finishes():
    eta = EtaEstimate(window=120, started=0)
    done = 0
    for t in range(0, 300, 5):
        done += 1
        eta.update(float(t), done, 400)
    steady = eta.update(300.0, done, 400)
    burst = eta.update(301.0, done + 30, 400)  # thirty pictures collected in one second

    assert steady is not None and burst is not None
    assert burst > steady * 0.7


def test_before_anything_finishes_the_plan_is_counted_down():
    eta = EtaEstimate(planned_seconds=450, started=100)

    assert eta.update(100.0, 0, 40) == pytest.approx(450)
    assert eta.update(160.0, 0, 40) == pytest.approx(390)
    assert EtaEstimate(started=0).update(10.0, 0, 40) is None


def rendered(renderable: object, width: int = 80) -> list[str]:
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text().splitlines()


def test_the_status_table_fits_80_columns_and_cuts_long_names_with_an_ellipsis():
    found = [status(name="knight-sprites-for-the-winter-campaign", succeeded=30, pending=10, total=40)]

    lines = rendered(batches_table(found, 80))

    assert max(map(len, lines)) <= 80
    [row] = [line for line in lines if line.strip().startswith("7 ")]
    assert "knight-" in row and "…" in row
    assert "images" in lines[1]
    assert len([line for line in lines if "knight" in line]) == 1  # never folded onto a second line


def test_the_accounts_table_fits_80_columns():
    reports = [
        AccountReport(
            name="girlgenerator-production-key-number-one", provider="girlgenerator", rpm=10, max_in_flight=4,
            in_flight=4, used_last_minute=10, paused_for=754, paused_because="rate limited (429) by the provider",
        )
    ]  # fmt: skip

    lines = rendered(accounts_table(reports, 80))

    assert max(map(len, lines)) <= 80
    assert any("12m 34s" in line for line in lines)
    assert len([line for line in lines if "girlgenerator-" in line]) == 1


def test_a_few_failures_are_named_one_by_one():
    out = io.StringIO()
    print_failures(Console(file=out, width=200), status(failures=3))

    lines = out.getvalue().splitlines()
    assert lines == ["  row-0 (line 1): reason 0", "  row-1 (line 2): reason 1", "  row-2 (line 3): reason 2"]


def test_many_failures_are_grouped_by_reason_with_and_n_more():
    out = io.StringIO()
    print_failures(Console(file=out, width=200), status(failures=12))

    text = out.getvalue()
    assert "12 jobs failed, by reason:" in text
    assert "4 x reason 0" in text and "4 x reason 1" in text and "4 x reason 2" in text
    assert "first: row-0 (line 1), row-1 (line 2), row-2 (line 3) and 9 more" in text
