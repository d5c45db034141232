"""Live progress of one batch in the terminal: done, running, failed, rate and time left."""

from __future__ import annotations

__all__ = ["WorkerDied", "follow"]

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from jobs.errors import WorkerDied
from jobs.lifecycle import JobState
from jobs.status import BatchStatus, batch_status


def follow(
    engine: Engine,
    batch_id: int,
    console: Console,
    *,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.5,
) -> BatchStatus:
    """Show the batch until it is final; returns its last status."""
    status = batch_status(engine, batch_id)
    started = time.monotonic()
    first_done = status.done
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(status.name, total=status.total, completed=status.done, detail="")
        while True:
            status = batch_status(engine, batch_id)
            progress.update(bar, completed=status.done, detail=_detail(status, started, first_done))
            if status.final:
                return status
            if not alive():
                raise WorkerDied(f"the worker stopped while batch {batch_id} was running")
            time.sleep(interval)


def _detail(status: BatchStatus, started: float, first_done: int) -> str:
    counts = status.counts
    running = sum(
        counts[s.value] for s in (JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING, JobState.COLLECTING)
    )
    elapsed = max(time.monotonic() - started, 1e-6)
    rate = (status.done - first_done) / elapsed
    left = status.total - status.done
    eta = f"{left / rate:.0f}s left" if rate > 0 and left else "--"
    return (
        f"[green]{counts[JobState.SUCCEEDED.value]} done[/] "
        f"[cyan]{running} running[/] "
        f"[red]{counts[JobState.FAILED.value]} failed[/] "
        f"{counts[JobState.PENDING.value]} waiting  {rate * 60:.1f}/min  {eta}"
    )
