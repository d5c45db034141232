"""How the CLI shows things in a terminal: tables that fit 80 columns, durations a person reads at a
glance, plans, summaries and failures. The commands in ``jobs.cli`` decide what to show; this module
decides how it looks."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from jobs.states import BUDGET_REACHED, JobState
from jobs.status import BatchStatus

if TYPE_CHECKING:
    from workers.fleet import AccountReport
    from workers.plan import Plan

FAILURES_LISTED = 10
"""Failed jobs named one by one; past this, failures are grouped by reason."""

RUNNING_STATES = (JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING, JobState.COLLECTING, JobState.UNCERTAIN)


def duration(seconds: float) -> str:
    """``1h 02m``, ``4m 30s``, ``45s``: to the second under an hour, to the minute past it."""
    if seconds == float("inf"):
        return "never (no account)"
    total = max(round(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def running_count(status: BatchStatus) -> int:
    return sum(status.counts[state.value] for state in RUNNING_STATES)


def _table(*, title: str | None = None) -> Table:
    return Table(title=title, show_header=True, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)


def _fitted(build: Callable[[list[int]], Table], width: int, texts: list[list[str]], widest: int = 32) -> Table:
    """The table ``build(text_widths)`` makes, its text columns (holding ``texts``, one list a column)
    as wide as ``width`` leaves them, the widest cut first: rich shrinks no column that must not wrap,
    so the room is measured and the text cut to it."""
    widths = [min(widest, max(map(len, column), default=4)) for column in texts]
    table = build(widths)
    measure = Console(width=10_000, record=True, file=io.StringIO())
    measure.print(table)
    over = max((len(line) for line in measure.export_text().splitlines()), default=0) - width
    if over <= 0:
        return table
    while over > 0 and max(widths) > 4:
        widths[widths.index(max(widths))] -= 1
        over -= 1
    return build(widths)


def _text_column(table: Table, header: str, width: int) -> None:
    """A text column that is cut with an ellipsis, never folded onto a second line."""
    table.add_column(header, no_wrap=True, overflow="ellipsis", max_width=width, min_width=min(width, 4))


def _number_column(table: Table, header: str, values: list[str]) -> None:
    table.add_column(header, justify="right", no_wrap=True, min_width=max([len(header), *map(len, values)]))


def batches_table(found: list[BatchStatus], width: int = 80) -> Table:
    # Credits are shown once a batch has spent some or has a budget: most runs have no cap.
    with_credits = any(s.spent or s.budget is not None for s in found)
    rows = [
        [
            str(s.id), s.name, "paused" if s.paused else s.state, str(s.total), str(s.counts[JobState.PENDING.value]),
            str(running_count(s)), str(s.counts[JobState.SUCCEEDED.value]), str(s.counts[JobState.FAILED.value]),
            str(s.images), *([credits(s.spent, s.budget)] if with_credits else []),
        ]
        for s in found
    ]  # fmt: skip

    def build(text_widths: list[int]) -> Table:
        table = _table()
        _number_column(table, "batch", [row[0] for row in rows])
        _text_column(table, "name", text_widths[0])
        table.add_column("state", no_wrap=True, min_width=max([5, *(len(row[2]) for row in rows)]))
        columns = ["jobs", "waiting", "running", "succeeded", "failed", "images"] + ["credits"] * with_credits
        for index, column in enumerate(columns, start=3):
            _number_column(table, column, [row[index] for row in rows])
        for row in rows:
            table.add_row(*row)
        return table

    return _fitted(build, width, [[row[1] for row in rows]])


def credits(spent: int, cap: int | None) -> str:
    """``12/100`` against a cap, ``12`` without one."""
    return f"{spent}/{cap}" if cap is not None else str(spent)


def print_paused(console: Console, status: BatchStatus, prefix: str = "") -> None:
    """Why a batch is paused and the command that sends it again."""
    if not status.paused:
        return
    how = f"`genq resume {status.id}`"
    if status.paused_reason == BUDGET_REACHED:
        how = f"`genq resume {status.id} --budget N` (N more than {status.budget})"
    spent = credits(status.spent, status.budget)
    console.print(
        f"{prefix}paused ({status.paused_reason}; {spent} credits spent): {how} resumes it",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def accounts_table(reports: list[AccountReport], width: int = 80) -> Table:
    # Credits spent today (against the daily cap) are shown once an account spent some or has a cap.
    with_today = any(report.credits_today or report.daily_credits is not None for report in reports)
    rows = []
    for report in reports:
        used = "?" if report.used_last_minute is None else str(report.used_last_minute)
        paused = f"{duration(report.paused_for)}: {report.paused_because}" if report.paused_for else ""
        if report.paused_by_hand and not report.paused_for:
            paused = f"until resumed: {report.paused_because}"
        balance = "" if report.credits_remaining is None else f"{report.credits_remaining:g}"
        today = [credits(report.credits_today, report.daily_credits)] if with_today else []
        rows.append(
            [report.name, report.provider, f"{used}/{report.rpm}", f"{report.in_flight}/{report.max_in_flight}",
             balance, *today, paused]
        )  # fmt: skip

    def build(text_widths: list[int]) -> Table:
        table = _table()
        _text_column(table, "account", text_widths[0])
        table.add_column("provider", no_wrap=True, min_width=13)
        columns = ["minute", "in flight", "credits"] + ["today"] * with_today
        for index, column in enumerate(columns, start=2):
            _number_column(table, column, [row[index] for row in rows])
        _text_column(table, "paused", text_widths[1])
        for row in rows:
            table.add_row(*row)
        return table

    return _fitted(build, width, [[row[0] for row in rows], [row[-1] for row in rows]])


def print_plan(console: Console, estimate: Plan) -> None:
    for p in estimate.providers:
        console.print(
            f"  {p.provider}: {p.jobs} jobs, {p.pictures} pictures, {p.credits} credits",
            highlight=False,
        )
        console.print(
            f"    {p.submits} submits + {p.polls} polls at {p.rpm}/min on {p.accounts} account(s): "
            f"about {duration(p.seconds)}",
            highlight=False,
        )
        if p.daily_left is not None:
            verdict = "fits" if p.fits_today else "does not fit: jobs wait for tomorrow's credits"
            console.print(f"    {p.daily_left} credits left today on its accounts' daily caps: {verdict}",
                          highlight=False)  # fmt: skip
    console.print(
        f"plan: {estimate.requests} requests, {estimate.credits} credits, about {duration(estimate.seconds)}",
        highlight=False,
    )
    if estimate.budget is not None:
        verdict = "fits" if estimate.fits_budget else f"does not fit: the batch pauses at {estimate.budget} credits"
        console.print(f"budget: {estimate.budget} credits; the plan {verdict}", highlight=False)


def print_failures(console: Console, status: BatchStatus, *, indent: str = "  ") -> None:
    """Each failed job by name and line while there are few; grouped by reason, most first, past that."""
    failed = status.counts[JobState.FAILED.value]
    if not failed:
        return
    if failed <= FAILURES_LISTED:
        for failure in status.errors:
            console.print(f"{indent}{_job_label(failure)}: {failure['error']}", markup=False, highlight=False)
        return
    console.print(f"{indent}{failed} jobs failed, by reason:", highlight=False)
    shown = status.failure_reasons[:FAILURES_LISTED]
    for group in shown:
        console.print(f"{indent}  {group['jobs']:>5} x {group['reason'] or '(no reason)'}", markup=False)
    others = status.failure_reasons[FAILURES_LISTED:]
    if others:
        jobs = sum(group["jobs"] for group in others)
        console.print(f"{indent}  and {len(others)} more reasons ({jobs} jobs)", highlight=False)
    examples = ", ".join(_job_label(failure) for failure in status.errors[:3])
    console.print(
        f"{indent}first: {examples} and {failed - min(3, len(status.errors))} more", markup=False, highlight=False
    )


def _job_label(failure: dict[str, object]) -> str:
    name, line = failure.get("name"), failure.get("line")
    label = str(name) if name else f"job {failure.get('job')}"
    return f"{label} (line {line})" if line else label


def print_lost_answers(console: Console, status: BatchStatus, prefix: str = "") -> None:
    lost = status.lost_answers
    if lost["uncertain"]:
        console.print(
            f"{prefix}lost answers: {lost['uncertain']} job(s) whose submit answer was lost; "
            f"{lost['adopted']} found at the provider and kept, {lost['resubmitted']} sent again "
            f"(on_uncertain: {status.on_uncertain})",
            highlight=False,
        )


def print_summary(console: Console, status: BatchStatus, *, images: str, results: str | None) -> None:
    """The end of a run: counts, failures, lost answers, and where the pictures are."""
    table = _table(title=f"batch {status.id} · {status.name} · {status.state}")
    for column in ("jobs", "succeeded", "failed", "canceled", "images"):
        table.add_column(column, justify="right", no_wrap=True)
    counts = status.counts
    table.add_row(
        str(status.total), str(counts[JobState.SUCCEEDED.value]), str(counts[JobState.FAILED.value]),
        str(counts[JobState.CANCELED.value]), str(status.images),
    )  # fmt: skip
    console.print(table)
    print_failures(console, status)
    print_lost_answers(console, status)
    console.print(f"Images: {images}", markup=False, soft_wrap=True)
    if results:
        console.print(f"Results: {results}", markup=False, soft_wrap=True)
