"""The drop folder: every batch file that lands whole in ``batches/inbox/`` becomes a batch.

A file is taken only once it has stopped changing (same size and mtime for ``settle_seconds``),
because people copy large catalogs over slow shares and a half-copied CSV is still a valid CSV.
It is checked like ``genq submit`` checks it; a good file is produced and, only after that
transaction has committed, moved to ``done/``; a refused one goes to ``failed/`` with
``<name>.errors.txt`` beside it, one problem a line, and writes nothing to the database. If the
watcher dies between the commit and the move, the file is taken again at the next start and found
to be the batch already made (same content), so nothing is submitted twice.

One watcher serves one inbox: names in ``done/`` and ``failed/`` are chosen free by looking first.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Literal

import watchfiles
from sqlalchemy import Engine

from jobs.accounts import load_accounts
from jobs.batchfile import StreamedBatch, open_batch
from jobs.checks import row_checks
from jobs.db import make_engine, migrate
from jobs.errors import BatchFileError, ConfigError
from jobs.producer import produce
from jobs.settings import Settings

log = logging.getLogger("genq.inbox")

Outcome = Literal["done", "failed", "duplicate"]

_IGNORED_SUFFIXES = ("~", ".tmp", ".part", ".partial", ".crdownload")
"""Names editors, browsers and copy tools give a file while it is still being written."""
_ERRORS_SUFFIX = ".errors.txt"
_RETRY_SECONDS = 30.0
"""How long a file waits after an unexpected error (the database down, say) before it is tried again."""


@dataclass(frozen=True)
class InboxResult:
    """What became of one file: its outcome, the batch it is (if any) and where the file now lives."""

    outcome: Outcome
    path: Path
    batch_id: int | None = None
    problems: tuple[str, ...] = ()
    """What was wrong with a failed file, as written to its errors file."""


def process(path: Path, engine: Engine, settings: Settings) -> InboxResult:
    """Check one batch file, produce it and move it to ``done/``, or refuse it into ``failed/``.

    Errors other than a refused file or refused accounts (the database down, say) propagate and leave
    the file where it is, so it can be tried again.
    """
    batches = settings.batches_dir
    try:
        batch = _checked(path, settings)
    except BatchFileError as error:
        return _refuse(path, batches / "failed", [str(problem) for problem in error.problems])
    except ConfigError as error:
        return _refuse(path, batches / "failed", [str(error)])
    try:
        produced = produce(engine, batch)
    except BatchFileError as error:  # the file changed between its check and its rows' writing
        return _refuse(path, batches / "failed", [str(problem) for problem in error.problems])
    batch_id = produced.batch.id
    assert batch_id is not None
    destination = _move(path, batches / "done")
    if produced.created:
        log.info("%s: batch %d, %d jobs; moved to %s", path.name, batch_id, batch.job_count, destination)
        return InboxResult("done", destination, batch_id)
    log.info("%s: same content as batch %d, nothing new submitted; moved to %s", path.name, batch_id, destination)
    return InboxResult("duplicate", destination, batch_id)


def watch(
    settings: Settings,
    *,
    on_batch: Callable[[int], object] | None = None,
    stop_event: threading.Event | None = None,
    settle_seconds: float = 1.0,
) -> None:
    """Take every whole file in the inbox, those already there first, until ``stop_event`` is set.

    ``on_batch`` is called with the id of each new batch (to wake the dispatcher). The watcher wakes
    on file events and also every half ``settle_seconds``, so a file that has stopped changing is
    taken even when no further event comes.
    """
    inbox = settings.batches_dir / "inbox"
    for folder in (inbox, settings.batches_dir / "done", settings.batches_dir / "failed"):
        folder.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    settling = _Settling(settle_seconds)
    wake_ms = max(50, int(settle_seconds * 500))
    changes = watchfiles.watch(
        inbox,
        watch_filter=lambda _change, name: _is_batch_name(Path(name).name),
        debounce=wake_ms,
        rust_timeout=wake_ms,
        yield_on_timeout=True,
        stop_event=stop_event,
        recursive=False,
    )
    log.info("watching %s (a file is taken after %.1f s unchanged)", inbox, settle_seconds)
    try:
        settling.whole(_candidates(inbox), time.monotonic())
        for _ in changes:
            for path in settling.whole(_candidates(inbox), time.monotonic()):
                _take(path, engine, settings, on_batch, settling)
    finally:
        engine.dispose()


def _take(
    path: Path, engine: Engine, settings: Settings, on_batch: Callable[[int], object] | None, settling: _Settling
) -> None:
    """Process one file; an unexpected error is logged and the file tried again later, never lost."""
    try:
        result = process(path, engine, settings)
    except FileNotFoundError:
        log.info("%s: removed before it was taken", path.name)
        return
    except Exception:
        log.exception("%s: not taken; trying again in %.0f s", path.name, _RETRY_SECONDS)
        settling.postpone(path, _RETRY_SECONDS)
        return
    if result.outcome == "done" and on_batch is not None and result.batch_id is not None:
        try:
            on_batch(result.batch_id)
        except Exception:
            log.exception("batch %d: submitted, but waking the dispatcher failed", result.batch_id)


def _checked(path: Path, settings: Settings) -> StreamedBatch:
    """The batch, checked as a file and against the accounts that would serve it, a row at a time.

    Accounts are read for every file, so a fixed ``accounts.yaml`` needs no restart of the watcher.
    """
    check = row_checks(lambda: load_accounts(settings.accounts), trusted=settings.trusted())
    return open_batch(path, display_name=path.name, check=check)


def _refuse(path: Path, failed: Path, problems: list[str]) -> InboxResult:
    """Write the errors file, then move the batch file beside it, so neither is ever seen alone."""
    failed.mkdir(parents=True, exist_ok=True)
    destination = _free_name(failed, path.name, companion=_ERRORS_SUFFIX)
    errors_file = destination.with_name(destination.name + _ERRORS_SUFFIX)
    _write_atomically(errors_file, "".join(f"{problem}\n" for problem in problems))
    try:
        shutil.move(path, destination)
    except FileNotFoundError:
        errors_file.unlink(missing_ok=True)
        raise
    log.warning("%s: refused, %d problem(s); moved to %s, see %s", path.name, len(problems), destination, errors_file)
    return InboxResult("failed", destination, problems=tuple(problems))


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    destination = _free_name(folder, path.name)
    shutil.move(path, destination)
    return destination


def _free_name(folder: Path, name: str, *, companion: str = "") -> Path:
    """The first free of ``name.csv``, ``name.1.csv``, ``name.2.csv``, ...; a file there is never replaced."""
    stem, suffix = Path(name).stem, Path(name).suffix
    for number in count():
        candidate = folder / (name if number == 0 else f"{stem}.{number}{suffix}")
        taken = candidate.exists() or (bool(companion) and candidate.with_name(candidate.name + companion).exists())
        if not taken:
            return candidate
    raise AssertionError("unreachable")


def _write_atomically(path: Path, text: str) -> None:
    """Write beside ``path`` under a hidden name and rename, so a reader never sees half a file."""
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


def _is_batch_name(name: str) -> bool:
    """Hidden files, editor backups and files still being downloaded are not batches (yet)."""
    return not name.startswith(".") and not name.endswith(_IGNORED_SUFFIXES)


def _candidates(inbox: Path) -> Iterator[Path]:
    with os.scandir(inbox) as entries:
        for entry in entries:
            if _is_batch_name(entry.name) and entry.is_file():
                yield Path(entry.path)


@dataclass
class _Settling:
    """The files in the inbox, each with the (size, mtime) it was last seen with and since when.

    Times are ``time.monotonic()`` seconds. A file is whole when it is not empty and its size and
    mtime have not changed for ``settle_seconds``.
    """

    settle_seconds: float
    seen: dict[Path, tuple[tuple[int, int], float]] = field(default_factory=dict)

    def whole(self, paths: Iterable[Path], now: float) -> list[Path]:
        """The files that are whole now, oldest first; forgets files no longer there."""
        current: dict[Path, tuple[tuple[int, int], float]] = {}
        ready: list[tuple[int, str, Path]] = []
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            signature = (stat.st_size, stat.st_mtime_ns)
            previous = self.seen.get(path)
            since = previous[1] if previous is not None and previous[0] == signature else now
            current[path] = (signature, since)
            if stat.st_size > 0 and now - since >= self.settle_seconds:
                ready.append((stat.st_mtime_ns, path.name, path))
        self.seen = current
        return [path for *_, path in sorted(ready)]

    def postpone(self, path: Path, seconds: float) -> None:
        """Hold a file back for ``seconds`` more, unless it changes meanwhile."""
        if path in self.seen:
            signature, _ = self.seen[path]
            self.seen[path] = (signature, time.monotonic() + seconds)
