"""Live progress of one batch in the terminal: succeeded, failed, running and waiting (which add up to
the batch), a rate per minute and a time left a person can trust.

The time left comes from the rate at which jobs finished over the last couple of minutes, not since
the start: a batch's first minute (the first wave generating, nothing finished yet) and a pause of
an account say little about the next ten. Until enough jobs have finished, it is the plan's estimate
counted down. The figure shown moves towards each new reading by a fraction, so one burst of
finishes does not swing it from an hour to a minute.
"""

from __future__ import annotations

__all__ = ["EtaEstimate", "WorkerDied", "follow"]

import time
from collections import deque
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from jobs.errors import WorkerDied
from jobs.render import duration, running_count
from jobs.states import JobState
from jobs.status import BatchStatus, batch_status


class EtaEstimate:
    """Seconds left from the recent rate of finished jobs, smoothed; the plan's until there is a rate."""

    def __init__(
        self,
        *,
        planned_seconds: float | None = None,
        window: float = 120.0,
        min_finished: int = 3,
        smoothing: float = 0.3,
        started: float | None = None,
    ) -> None:
        self.planned_seconds = planned_seconds
        self.window = window
        self.min_finished = min_finished
        self.smoothing = smoothing
        self.started = time.monotonic() if started is None else started
        self._samples: deque[tuple[float, int]] = deque()
        self._shown: float | None = None

    def update(self, now: float, done: int, total: int) -> float | None:
        """The time left after a reading of ``done`` of ``total`` at ``now``; None when nothing can be said."""
        self._samples.append((now, done))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()
        left = total - done
        if left <= 0:
            self._shown = 0.0
            return 0.0
        reading = self._reading(now, done, left)
        if reading is None:
            return self._shown
        if self._shown is None:
            self._shown = reading
        else:
            # Counted down since the last reading, then moved part of the way to the new one.
            previous_now = self._samples[-2][0] if len(self._samples) > 1 else now
            counted_down = max(self._shown - (now - previous_now), 0.0)
            self._shown = counted_down + self.smoothing * (reading - counted_down)
        return self._shown

    def rate(self) -> float:
        """Jobs finished per second over the window."""
        (t0, done0), (t1, done1) = self._samples[0], self._samples[-1]
        return (done1 - done0) / (t1 - t0) if t1 > t0 else 0.0

    def _reading(self, now: float, done: int, left: int) -> float | None:
        finished_in_window = self._samples[-1][1] - self._samples[0][1]
        if finished_in_window >= self.min_finished and self.rate() > 0:
            return left / self.rate()
        if self.planned_seconds is not None:
            return max(self.planned_seconds - (now - self.started), 0.0)
        return None


def follow(
    engine: Engine,
    batch_id: int,
    console: Console,
    *,
    alive: Callable[[], bool] = lambda: True,
    planned_seconds: float | None = None,
    interval: float = 0.5,
) -> BatchStatus:
    """Show the batch until it is final; returns its last status."""
    status = batch_status(engine, batch_id)
    eta = EtaEstimate(planned_seconds=planned_seconds)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=20),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(status.name[:16], total=status.total, completed=status.done, detail="")
        while True:
            status = batch_status(engine, batch_id)
            left = eta.update(time.monotonic(), status.done, status.total)
            progress.update(bar, completed=status.done, detail=describe(status, eta.rate(), left))
            if status.final:
                return status
            if not alive():
                raise WorkerDied(f"the worker stopped while batch {batch_id} was running")
            time.sleep(interval)


def describe(status: BatchStatus, rate: float, left: float | None) -> str:
    """``12 ok 3 failed 8 running 17 waiting · 9.5/min · 4m 30s left``; the counts add up to the batch."""
    counts = status.counts
    parts = [
        f"[green]{counts[JobState.SUCCEEDED.value]} ok[/]",
        f"[red]{counts[JobState.FAILED.value]} failed[/]",
        f"[cyan]{running_count(status)} running[/]",
        f"{counts[JobState.PENDING.value]} waiting",
    ]
    if counts[JobState.CANCELED.value]:
        parts.append(f"{counts[JobState.CANCELED.value]} canceled")
    when = "--" if left is None else f"{duration(left)} left"
    return f"{' '.join(parts)} · {rate * 60:.1f}/min · {when}"
