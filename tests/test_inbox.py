"""The inbox watcher as a person using the drop folder sees it: a file that lands whole becomes one
batch and moves to ``done/``; a refused one moves to ``failed/`` with its problems beside it and
leaves nothing in the database; a file still being written is not taken."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from jobs.inbox import watch
from jobs.models import Batch, Job
from jobs.settings import Settings
from tests.conftest import SANDBOX_KEY, write_accounts

HEADER = "prompt,provider,name,aspect\n"
ROWS = [f"a studio photo of boot number {n} on white,gencraft,boot-{n},1:1\n" for n in range(1, 41)]
CATALOG = HEADER + "".join(ROWS)


@dataclass
class Watcher:
    """``genq watch`` running in a thread over a drop folder of its own."""

    batches: Path
    submitted: list[int] = field(default_factory=list)
    crashed: list[BaseException] = field(default_factory=list)

    @property
    def inbox(self) -> Path:
        return self.batches / "inbox"

    @property
    def done(self) -> Path:
        return self.batches / "done"

    @property
    def failed(self) -> Path:
        return self.batches / "failed"

    def drop(self, name: str, text: str) -> Path:
        path = self.inbox / name
        path.write_text(text)
        return path


@pytest.fixture
def settings(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GENQ_TEST_SANDBOX_KEY", SANDBOX_KEY)
    accounts = write_accounts(tmp_path / "accounts.yaml", {"gencraft": "http://127.0.0.1:9/gencraft"})
    batches = tmp_path / "batches"
    for folder in ("inbox", "done", "failed"):
        (batches / folder).mkdir(parents=True)
        (batches / folder / ".gitkeep").touch()
    return Settings(var_dir=tmp_path / "var", database_url=database_url, accounts=accounts, batches_dir=batches)


@pytest.fixture
def start_watcher(settings: Settings, engine: Engine) -> Iterator[Callable[..., Watcher]]:
    stop = threading.Event()
    threads: list[threading.Thread] = []
    watchers: list[Watcher] = []

    def start(settle_seconds: float = 0.2) -> Watcher:
        watcher = Watcher(settings.batches_dir)

        def run() -> None:
            try:
                watch(settings, on_batch=watcher.submitted.append, stop_event=stop, settle_seconds=settle_seconds)
            except BaseException as error:
                watcher.crashed.append(error)

        thread = threading.Thread(target=run, name="inbox-watcher", daemon=True)
        thread.start()
        threads.append(thread)
        watchers.append(watcher)
        return watcher

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "the watcher did not stop when asked"
    for watcher in watchers:
        assert not watcher.crashed, watcher.crashed


def wait_for(condition: Callable[[], bool], what: str, watcher: Watcher, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if watcher.crashed:
            raise AssertionError(f"the watcher crashed: {watcher.crashed!r}")
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not after {timeout} s: {what}")


def batches_and_jobs(engine: Engine) -> tuple[list[Batch], int]:
    with Session(engine) as session:
        batches = list(session.exec(select(Batch)).all())
        return batches, session.exec(select(func.count()).select_from(Job)).one()


def files(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if not path.name.startswith(".")}


def test_a_good_file_becomes_one_batch_and_moves_to_done(start_watcher, engine):
    watcher = start_watcher()

    watcher.drop("catalog.csv", CATALOG)
    wait_for(lambda: (watcher.done / "catalog.csv").exists(), "catalog.csv in done/", watcher)

    batches, jobs = batches_and_jobs(engine)
    assert [(batch.name, batch.job_count) for batch in batches] == [("catalog", len(ROWS))]
    assert jobs == len(ROWS)
    assert watcher.submitted == [batches[0].id]
    assert files(watcher.inbox) == set()
    assert (watcher.done / "catalog.csv").read_text() == CATALOG


def test_a_bad_file_moves_to_failed_with_its_problems_and_writes_nothing(start_watcher, engine):
    watcher = start_watcher()
    rows = [*ROWS[:5], ",gencraft,no-prompt,1:1\n", *ROWS[5:8]]  # header is line 1, so this row is line 7

    watcher.drop("bad.csv", HEADER + "".join(rows))
    wait_for(lambda: (watcher.failed / "bad.csv").exists(), "bad.csv in failed/", watcher)

    problems = (watcher.failed / "bad.csv.errors.txt").read_text().splitlines()
    assert len(problems) == 1
    assert problems[0].startswith("bad.csv:7: prompt: ")
    assert batches_and_jobs(engine) == ([], 0)
    assert watcher.submitted == []
    assert files(watcher.inbox) == set()


def test_a_file_still_being_written_is_taken_only_when_whole(start_watcher, engine):
    watcher = start_watcher(settle_seconds=1.0)
    parts = [HEADER + "".join(ROWS[:10])] + ["".join(ROWS[n : n + 10]) for n in range(10, len(ROWS), 10)]

    with (watcher.inbox / "slow.csv").open("w") as handle:
        for part in parts:
            handle.write(part)
            handle.flush()
            time.sleep(0.3)
    wait_for(lambda: bool(files(watcher.done) | files(watcher.failed)), "slow.csv taken", watcher)

    assert files(watcher.done) == {"slow.csv"}, files(watcher.failed)
    batches, jobs = batches_and_jobs(engine)
    assert [batch.job_count for batch in batches] == [len(ROWS)]
    assert jobs == len(ROWS)


def test_the_same_file_dropped_twice_is_one_batch_and_both_copies_are_kept(start_watcher, engine):
    watcher = start_watcher()
    watcher.drop("catalog.csv", CATALOG)
    wait_for(lambda: (watcher.done / "catalog.csv").exists(), "the first copy in done/", watcher)

    watcher.drop("catalog.csv", CATALOG)
    wait_for(lambda: (watcher.done / "catalog.1.csv").exists(), "the second copy in done/", watcher)

    batches, jobs = batches_and_jobs(engine)
    assert len(batches) == 1
    assert jobs == len(ROWS)
    assert watcher.submitted == [batches[0].id]
    assert files(watcher.done) == {"catalog.csv", "catalog.1.csv"}
    assert files(watcher.inbox) == set()


def test_an_unsupported_file_type_moves_to_failed_with_a_clear_message(start_watcher, engine):
    watcher = start_watcher()

    watcher.drop("notes.txt", CATALOG)
    wait_for(lambda: (watcher.failed / "notes.txt").exists(), "notes.txt in failed/", watcher)

    problems = (watcher.failed / "notes.txt.errors.txt").read_text()
    assert "notes.txt: unsupported file type '.txt'" in problems
    assert ".csv" in problems
    assert batches_and_jobs(engine) == ([], 0)


def test_a_refused_file_never_replaces_one_already_in_failed(start_watcher, engine):
    watcher = start_watcher()
    watcher.drop("bad.csv", HEADER + ",gencraft,first,1:1\n")
    wait_for(lambda: (watcher.failed / "bad.csv").exists(), "the first bad.csv in failed/", watcher)

    watcher.drop("bad.csv", HEADER + ROWS[0] + "a cat,dalle,second,1:1\n")
    wait_for(lambda: (watcher.failed / "bad.1.csv").exists(), "the second bad.csv in failed/", watcher)

    assert (watcher.failed / "bad.csv").read_text() == HEADER + ",gencraft,first,1:1\n"
    assert (watcher.failed / "bad.csv.errors.txt").read_text().startswith("bad.csv:2: prompt: ")
    assert (watcher.failed / "bad.1.csv.errors.txt").read_text().startswith("bad.csv:3: provider: ")
    assert batches_and_jobs(engine) == ([], 0)


def test_refused_accounts_fail_the_file_naming_the_missing_variable(start_watcher, engine, monkeypatch):
    monkeypatch.delenv("GENQ_TEST_SANDBOX_KEY")
    watcher = start_watcher()

    watcher.drop("catalog.csv", CATALOG)
    wait_for(lambda: (watcher.failed / "catalog.csv").exists(), "catalog.csv in failed/", watcher)

    assert "GENQ_TEST_SANDBOX_KEY is not set" in (watcher.failed / "catalog.csv.errors.txt").read_text()
    assert batches_and_jobs(engine) == ([], 0)


def test_files_waiting_at_start_are_taken_and_partial_downloads_are_left_alone(settings, start_watcher, engine):
    waiting = settings.batches_dir / "inbox" / "waiting.csv"
    waiting.write_text(CATALOG)
    partial = settings.batches_dir / "inbox" / "later.csv.part"
    partial.write_text(HEADER + ROWS[0])

    watcher = start_watcher()
    wait_for(lambda: (watcher.done / "waiting.csv").exists(), "waiting.csv in done/", watcher)
    assert files(watcher.inbox) == {"later.csv.part"}

    partial.write_text(HEADER + ROWS[0] + ROWS[1])
    partial.rename(watcher.inbox / "later.csv")
    wait_for(lambda: (watcher.done / "later.csv").exists(), "later.csv in done/", watcher)

    batches, _ = batches_and_jobs(engine)
    assert sorted((batch.name, batch.job_count) for batch in batches) == [("later", 2), ("waiting", len(ROWS))]
    assert files(watcher.inbox) == set()
