"""The batch report as a person opens it: ``report.html`` in the batch's folder, with a small WebP
thumbnail beside every picture, relative links that all name stored objects, the counts of ``genq
status``, failures grouped by reason, prompts shown as text, and a page for 5,000 pictures that stays
small. The batch is a real sandbox run with failures (``genq run --sandbox``), read back from its
database and store; the large batch is made of rows written directly, as a run would leave them.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image
from sqlalchemy import Engine, insert, update
from sqlmodel import Session, col, func, select

from jobs.batchfile import load_batch
from jobs.db import make_engine, session_scope
from jobs.errors import StorageError
from jobs.models import Asset, Batch, Job, ProviderTask, utcnow
from jobs.producer import produce
from jobs.report import REPORT, AccountFigures, RunFigures, thumbnail, write_report
from jobs.states import BatchState, JobState
from jobs.storage import Storage, batch_folder
from tests.conftest import ROOT

CATALOG = """\
name: report-check
defaults:
  provider: gencraft
jobs:
  - {name: fox/snow, prompt: a red fox in the snow}
  - {name: fox/forest, prompt: a red fox in a pine forest}
  - {name: owl/night, prompt: a snowy owl at night}
  - {name: owl/day, prompt: a barn owl in daylight, aspect: "16:9"}
  - {name: hare, prompt: a hare in a meadow, aspect: "3:4"}
  - {name: lynx, prompt: a lynx on a rock}
  - name: hero/walk
    provider: qtpixel
    sprite: walk
    background: transparent
    prompt: pixel-art hero in a red cape, side view, walking right
  - name: odd
    provider: qtpixel
    background: transparent
    prompt: 'a <script>alert("pwned")</script> & <b>bold</b> cat'
  - name: refused
    provider: qtpixel
    prompt: "sandbox:unsafe a forbidden picture"
"""
HOSTILE = '<script>alert("pwned")</script>'
SANDBOX_WITH_FAILURES = {
    "GENQ_SANDBOX_FAILURE_RATE": "0.5",
    "GENQ_SANDBOX_SEED": "7",
    "GENQ_SANDBOX_IMAGE_SIDE": "320",
}
"""Half the tasks fail, drawn from a fixed seed (one worker thread keeps the draws in order), and the
pictures are drawn larger than a thumbnail so that making one shrinks them."""


@dataclass(frozen=True)
class FinishedRun:
    """A batch ``genq run --sandbox`` took to its end in ``folder``, with its database and store."""

    folder: Path
    batch_id: int
    engine: Engine
    storage: Storage

    @property
    def batch_folder(self) -> str:
        with Session(self.engine) as session:
            batch = session.get(Batch, self.batch_id)
        assert batch is not None
        return batch_folder(self.batch_id, batch.name)

    def status_json(self) -> dict[str, Any]:
        """What ``genq status BATCH --json`` prints, run where the batch ran."""
        done = genq("status", str(self.batch_id), "--json", cwd=self.folder)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))


def genq(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    for name in ("GENQ_DATABASE_URL", "GENQ_STORAGE_URL", "GENQ_REDIS_URL", "GENQ_VAR_DIR", "GENQ_ACCOUNTS"):
        environment.pop(name, None)  # the embedded default in ``cwd``, whatever the test session set
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def run_sandbox_batch(folder: Path, batch_file: str = CATALOG) -> FinishedRun:
    """``genq run`` a batch on the sandbox with failures, in ``folder``; it ends failed (exit code 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "catalog.yaml").write_text(batch_file)
    done = genq("run", "catalog.yaml", "--sandbox", "--concurrency", "1", cwd=folder, env=SANDBOX_WITH_FAILURES)
    assert done.returncode == 1, done.stdout + done.stderr
    engine = make_engine(f"sqlite:///{folder / 'var' / 'genq.db'}")
    with Session(engine) as session:
        [batch_id] = session.exec(select(Batch.id)).all()
    assert batch_id is not None
    return FinishedRun(folder, batch_id, engine, Storage(f"file://{folder / 'var' / 'objects'}"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinishedRun]:
    run = run_sandbox_batch(tmp_path_factory.mktemp("report-run"))
    yield run
    run.engine.dispose()


@pytest.fixture(scope="module")
def page(finished: FinishedRun) -> Page:
    key = write_report(finished.engine, finished.storage, finished.batch_id)
    return Page.parse(finished.storage.get(key).decode())


class Page(HTMLParser):
    """The elements of a report, by what the tests look for: ids, links, pictures, scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.html = ""
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    @classmethod
    def parse(cls, html: str) -> Page:
        page = cls()
        page.html = html
        page.feed(html)
        page.close()
        return page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def by_id(self, element_id: str) -> dict[str, str]:
        [found] = [attrs for _, attrs in self.elements if attrs.get("id") == element_id]
        return found

    def all(self, tag: str, **wanted: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.elements if name == tag
                and all(attrs.get(key.replace("_", "-")) == value for key, value in wanted.items())]  # fmt: skip

    def links(self) -> list[str]:
        """Every address the page links or loads, but its own anchors and its empty icon."""
        found = [attrs[name] for tag, attrs in self.elements for name in ("href", "src")
                 if name in attrs and not (tag == "link" and attrs.get("rel") == "icon")]  # fmt: skip
        return [link for link in found if not link.startswith("#")]

    def counts(self) -> dict[str, int]:
        return {attrs["id"].removeprefix("count-"): int(attrs["data-count"])
                for _, attrs in self.elements if attrs.get("id", "").startswith("count-")}  # fmt: skip


def stored_key(folder: str, link: str) -> str:
    """The object a link of the page names: relative to the batch's folder, as a browser resolves it."""
    parsed = urlparse(link)
    assert not parsed.scheme and not parsed.netloc and not link.startswith("/"), f"{link} is not relative"
    return posixpath.normpath(posixpath.join(folder, unquote(parsed.path)))


def assets(engine: Engine, batch_id: int) -> list[Asset]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(Asset).join(Job, col(Job.id) == col(Asset.job_id)).where(col(Job.batch_id) == batch_id)
            ).all()
        )


def thumb_key(folder: str, asset_key: str) -> str:
    return f"{folder}/thumbs/{posixpath.splitext(asset_key.removeprefix(folder + '/'))[0]}.webp"


# -- a real run, read back -----------------------------------------------------------------------------


def test_the_run_leaves_successes_and_failures_of_more_than_one_reason(finished: FinishedRun):
    status = finished.status_json()
    assert status["state"] == BatchState.FAILED
    assert status["counts"]["succeeded"] > 0 and status["images"] > 0
    assert len(status["failure_reasons"]) >= 2, status["failure_reasons"]


def test_the_report_is_written_in_the_batch_folder(finished: FinishedRun, page: Page):
    key = write_report(finished.engine, finished.storage, finished.batch_id)

    assert key == f"{finished.batch_folder}/{REPORT}"
    assert (finished.folder / "var" / "objects" / key).is_file()
    assert page.html.lstrip().startswith("<!DOCTYPE html>")


def test_every_picture_has_a_webp_thumbnail_at_most_160_pixels_keeping_transparency(finished: FinishedRun, page: Page):
    pictures = assets(finished.engine, finished.batch_id)
    assert pictures
    for asset in pictures:
        data = finished.storage.get(thumb_key(finished.batch_folder, asset.key))
        with Image.open(io.BytesIO(data)) as thumb, Image.open(io.BytesIO(finished.storage.get(asset.key))) as full:
            assert thumb.format == "WEBP"
            assert max(thumb.size) == min(160, max(full.size)), (asset.key, thumb.size, full.size)
            if full.mode in ("RGBA", "LA", "PA") or "transparency" in full.info:
                assert thumb.mode == "RGBA", asset.key
    shown = [attrs for attrs in page.all("img") if attrs["src"].startswith("thumbs/")]
    assert len(shown) == len(pictures)


def test_every_link_and_source_is_relative_and_names_a_stored_object(finished: FinishedRun, page: Page):
    links = page.links()
    assert links
    for link in links:
        finished.storage.get(stored_key(finished.batch_folder, link))  # raises when nothing is there
    assert "data:" not in " ".join(links)


def test_the_counts_on_the_page_are_those_of_genq_status(finished: FinishedRun, page: Page):
    status = finished.status_json()
    counts = page.counts()

    assert {state: counts[state] for state in status["counts"]} == status["counts"]
    assert counts["images"] == status["images"]
    assert counts["total"] == status["total"]


def test_failures_are_grouped_by_reason_as_genq_status_counts_them(finished: FinishedRun, page: Page):
    status = finished.status_json()
    groups = page.all("details", data_state="failed")

    assert [(g["data-reason"], int(g["data-jobs"])) for g in groups] == [
        (group["reason"], group["jobs"]) for group in status["failure_reasons"]
    ]


def test_a_prompt_is_shown_as_text_never_as_markup(page: Page):
    assert HOSTILE not in page.html and "<b>bold</b>" not in page.html
    assert any(HOSTILE in text for text in page.text)  # the prompt is there, as the words it is
    assert len(page.all("script")) == (1 if page.all("canvas") else 0)  # only the page's own player


def test_a_report_written_again_makes_no_thumbnail_again(finished: FinishedRun, page: Page):
    objects = finished.folder / "var" / "objects"
    thumbs = sorted((objects / finished.batch_folder / "thumbs").rglob("*.webp"))
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in thumbs}
    gone = thumbs[0]
    gone.unlink()
    time.sleep(0.01)

    write_report(finished.engine, finished.storage, finished.batch_id)

    after = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in thumbs}
    assert {path: seen for path, seen in after.items() if path != gone} == {
        path: seen for path, seen in before.items() if path != gone
    }
    assert after[gone][1] == before[gone][1]  # the one removed is made again, the same


def test_without_run_figures_planned_is_not_recorded_and_spent_comes_from_the_database_and_results(
    finished: FinishedRun, page: Page
):
    with Session(finished.engine) as session:
        tasks, polls = session.exec(
            select(func.count(col(ProviderTask.id)), func.sum(col(ProviderTask.polls)))
            .join(Job, col(Job.id) == col(ProviderTask.job_id))
            .where(col(Job.batch_id) == finished.batch_id)
        ).one()

    results = finished.storage.get(f"{finished.batch_folder}/results.jsonl").decode().splitlines()

    assert cell(page, "planned-requests") == "not recorded"
    assert cell(page, "planned-credits") == "not recorded"
    assert cell(page, "spent-requests") == str(tasks + (polls or 0))
    assert cell(page, "spent-credits") == str(sum(json.loads(line)["credits"] for line in results))


def cell(page: Page, element_id: str) -> str:
    """The text of an element with an id, found in the page's source."""
    start = page.html.index(f'id="{element_id}">') + len(f'id="{element_id}">')
    return page.html[start : page.html.index("<", start)]


# -- rows written directly: figures, sheets, a large batch ---------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Storage:
    return Storage(f"file://{tmp_path / 'objects'}")


def finished_rows(
    engine: Engine, folder: Path, jobs: int, *, failed_every: int = 0, reasons: int = 3, storage: Storage | None = None
) -> Batch:
    """A batch of ``jobs`` rows as a run leaves them: every ``failed_every``-th job failed for one of
    ``reasons`` reasons, the others succeeded with one 32x32 PNG asset, stored in ``storage`` if given."""
    lines = "".join(f"picture {n} of a large catalog,gencraft,item/{n:05d}\n" for n in range(jobs))
    (folder / "large.csv").write_text("prompt,provider,name\n" + lines)
    batch = produce(engine, load_batch(folder / "large.csv")).batch
    assert batch.id is not None
    with session_scope(engine) as session:
        rows = session.exec(select(Job.id, Job.seq, Job.name).where(col(Job.batch_id) == batch.id)).all()
        failed = {job_id for job_id, seq, _ in rows if failed_every and seq % failed_every == 0}
        session.execute(update(Job).where(col(Job.batch_id) == batch.id).values(state=JobState.SUCCEEDED.value,
                                                                                  account="gencraft-1"))  # fmt: skip
        for job_id, seq, _ in rows:
            if job_id in failed:
                session.execute(update(Job).where(col(Job.id) == job_id).values(
                    state=JobState.FAILED.value, error=f"reason {seq % reasons}"))  # fmt: skip
        session.execute(insert(Asset), [
            {"job_id": job_id, "index": 0, "key": f"{batch_folder(batch.id, batch.name)}/{name}.png",
             "sha256": "0" * 64, "bytes": 100, "width": 32, "height": 32, "content_type": "image/png"}
            for job_id, _, name in rows if job_id not in failed
        ])  # fmt: skip
        session.execute(
            update(Batch).where(col(Batch.id) == batch.id).values(state=BatchState.FAILED.value, finished_at=utcnow())
        )
    if storage is not None:
        for asset in assets(engine, batch.id):
            storage.put(asset.key, png(32, 32))
    return batch


def test_a_5000_picture_report_links_lazy_thumbnails_and_embeds_no_picture(engine: Engine, tmp_path: Path):
    storage = Storage("memory://")
    batch = finished_rows(engine, tmp_path, 5000, failed_every=50)
    assert batch.id is not None
    folder = batch_folder(batch.id, batch.name)
    tiny = thumbnail(png(8, 8))
    for asset in assets(engine, batch.id):
        storage.put(thumb_key(folder, asset.key), tiny)  # made by an earlier report

    started = time.monotonic()
    key = write_report(engine, storage, batch.id)
    took = time.monotonic() - started

    html = storage.get(key).decode()
    page = Page.parse(html)
    images = page.all("img")
    assert len(images) == 4900
    assert all(i["loading"] == "lazy" and i["width"] and i["height"] and i["src"].endswith(".webp") for i in images)
    assert not any(link.startswith("data:") for link in page.links()) and "base64" not in html
    assert len(html) < 5000 * 800, f"{len(html)} bytes"
    assert took < 15, f"{took:.1f} s"
    assert page.counts()["failed"] == 100 and page.counts()["images"] == 4900


def test_figures_of_the_run_are_shown_planned_beside_spent(engine: Engine, store: Storage, tmp_path: Path):
    batch = finished_rows(engine, tmp_path, 3)
    assert batch.id is not None
    for asset in assets(engine, batch.id):
        store.put(asset.key, png(200, 100))
    figures = RunFigures(planned_requests=6, planned_credits=3, planned_seconds=90.0, spent_requests=9,
                         spent_credits=3, accounts=(AccountFigures("gencraft-1", 9, 2, 61.0),))  # fmt: skip

    page = Page.parse(store.get(write_report(engine, store, batch.id, figures)).decode())

    assert [cell(page, f"{when}-requests") for when in ("planned", "spent")] == ["6", "9"]
    assert [cell(page, f"{when}-credits") for when in ("planned", "spent")] == ["3", "3"]
    assert cell(page, "planned-time") == "1m 30s"
    row = page.html[page.html.index('data-account="gencraft-1"') :].split("</tr>")[0]
    assert [c.split("<")[0] for c in row.split('class="num">')[1:]] == ["3", "9", "2", "1m 01s"]
    [asset] = assets(engine, batch.id)[:1]
    with Image.open(io.BytesIO(store.get(thumb_key(batch_folder(batch.id, batch.name), asset.key)))) as thumb:
        assert thumb.size == (160, 80)  # fitted to the stored picture, 200x100


def test_each_sheet_of_the_index_plays_its_frames_at_its_fps(engine: Engine, store: Storage, tmp_path: Path):
    batch = finished_rows(engine, tmp_path, 1, storage=store)
    assert batch.id is not None
    folder = batch_folder(batch.id, batch.name)
    frames = [{"x": 64 * n, "y": 0, "w": 64, "h": 64} for n in range(3)]
    sheet = {"name": "hero/walk", "image": "sheets/hero/walk.png", "atlas": "sheets/hero/walk.json",
             "aseprite": "sheets/hero/walk.aseprite.json", "godot": "sheets/hero/walk.tres", "fps": 12,
             "missing": ["hero/walk-4"], "animations": {"walk": frames}}  # fmt: skip
    outside = {**sheet, "name": "stray", "image": "../../elsewhere/secret.png"}
    store.put(f"{folder}/sheets/index.json", json.dumps({"sheets": [sheet, outside]}).encode())
    for path in ("hero/walk.png", "hero/walk.json", "hero/walk.aseprite.json", "hero/walk.tres"):
        store.put(f"{folder}/sheets/{path}", png(256, 64) if path.endswith(".png") else b"{}")

    page = Page.parse(store.get(write_report(engine, store, batch.id)).decode())

    [canvas] = page.all("canvas")
    assert json.loads(canvas["data-frames"]) == frames and float(canvas["data-fps"]) == 12
    assert page.all("img", src="sheets/hero/walk.png")
    assert {"sheets/hero/walk.json", "sheets/hero/walk.aseprite.json", "sheets/hero/walk.tres"} <= set(page.links())
    assert "hero/walk-4" in page.html
    assert "stray" not in page.html and "secret" not in page.html  # a path out of the folder is left out
    for link in page.links():
        store.get(stored_key(folder, link))


def test_without_a_sheet_index_the_page_has_no_sheets_and_no_script(engine: Engine, store: Storage, tmp_path: Path):
    batch = finished_rows(engine, tmp_path, 1)
    assert batch.id is not None

    page = Page.parse(store.get(write_report(engine, store, batch.id)).decode())

    assert not page.all("section", id="sheets") and not page.all("script")


def test_a_picture_that_cannot_be_read_gets_a_tile_without_a_thumbnail(engine: Engine, store: Storage, tmp_path: Path):
    batch = finished_rows(engine, tmp_path, 2)
    assert batch.id is not None
    [first, second] = sorted(assets(engine, batch.id), key=lambda a: a.key)
    store.put(first.key, png(40, 40))
    store.put(second.key, b"not a picture")

    page = Page.parse(store.get(write_report(engine, store, batch.id)).decode())

    below = first.key.split("/", 1)[1].removesuffix(".png")
    assert [i["src"] for i in page.all("img")] == [f"thumbs/{below}.webp"]
    assert "no preview" in page.html
    with pytest.raises(StorageError):
        store.get(thumb_key(batch_folder(batch.id, batch.name), second.key))


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (200, 60, 40, 255)).save(out, "PNG")
    return out.getvalue()
