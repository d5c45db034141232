"""``report.html`` of a finished sandbox batch with failures, opened in headless Chromium as a person
opens it: from the batch's folder (over HTTP on loopback, and as a file) and from an S3 bucket (moto's
server standing in for MinIO). The page must raise no console error, every thumbnail must load once
scrolled to (``naturalWidth`` > 0), each sheet must play its animation, and the counts on the page must
be ``genq status --json``'s. A full-page screenshot of each is kept as a test artefact, in
``$GENQ_TEST_ARTIFACTS`` (default ``tests/artifacts/``).

Debian's ``chromium`` is driven by Playwright (never a browser of Playwright's own). Without either
the tests skip, naming what to install; under CI (``CI=true``) they fail instead.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import obstore
import pytest
from PIL import Image

from jobs.report import REPORT, write_report
from jobs.storage import Storage
from tests.conftest import ROOT
from tests.test_report import FinishedRun, run_sandbox_batch

ARTIFACTS = Path(os.environ.get("GENQ_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
REGION = "us-east-1"
SECONDS = 30


def public_read(bucket: str) -> dict[str, Any]:
    """Anyone may read the bucket's objects: how a report in MinIO is shared (``mc anonymous set download``)."""
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                    "Resource": f"arn:aws:s3:::{bucket}/*"}]}  # fmt: skip


def missing(what: str, install: str) -> None:
    """Skip for want of a browser tool, naming the install; under CI, where it must be there, fail."""
    message = f"{what} is not installed: {install}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        missing("chromium", "apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing(
            "Playwright for Python", "pip install -e '.[test]' (it drives Debian's chromium: no `playwright install`)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinishedRun]:
    """A sandbox run that ended with failures, and a sheet in its folder for the page to play."""
    run = run_sandbox_batch(tmp_path_factory.mktemp("report-browser"))
    ensure_a_sheet(run)
    yield run
    run.engine.dispose()


def ensure_a_sheet(run: FinishedRun) -> None:
    """The run packs its sprite job's frames into a sheet; where it left none (every frame failed),
    a strip is made of the pictures it did store, so the page always has an animation to play."""
    folder = run.folder / "var" / "objects" / run.batch_folder
    index = folder / "sheets" / "index.json"
    if index.is_file() and json.loads(index.read_text()).get("sheets"):
        return
    pictures = sorted(p for p in folder.rglob("*.png") if "sheets" not in p.parts and "thumbs" not in p.parts)[:4]
    assert pictures, "the run stored no picture"
    strip = Image.new("RGBA", (64 * len(pictures), 64))
    for place, path in enumerate(pictures):
        with Image.open(path) as picture:
            strip.paste(picture.convert("RGBA").resize((64, 64)), (64 * place, 0))
    (folder / "sheets").mkdir(exist_ok=True)
    strip.save(folder / "sheets" / "strip.png")
    frames = [{"x": 64 * place, "y": 0, "w": 64, "h": 64} for place in range(len(pictures))]
    entry = {"name": "strip", "image": "sheets/strip.png", "fps": 8, "missing": [], "animations": {"strip": frames}}
    index.write_text(json.dumps({"sheets": [entry]}))


@pytest.fixture(scope="module")
def served(finished: FinishedRun) -> Iterator[str]:
    """The run's object store over HTTP on loopback, as any static web server would serve the folder."""
    with serving(finished.folder / "var" / "objects") as address:
        yield address


@contextmanager
def serving(root: Path) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def bucket(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A fresh bucket in moto's S3 server on loopback: (its URL for genq, its address for a browser)."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint, name = f"http://127.0.0.1:{port}", f"genq-report-{uuid.uuid4().hex[:8]}"
    for variable, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "genq-test",
                            "AWS_SECRET_ACCESS_KEY": "genq-test-secret", "AWS_REGION": REGION,
                            "AWS_ALLOW_HTTP": "true"}.items():  # fmt: skip
        monkeypatch_module.setenv(variable, value)
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="genq-test",
                      aws_secret_access_key="genq-test-secret")  # fmt: skip
    s3.create_bucket(Bucket=name)
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps(public_read(name)))
    yield f"s3://{name}/objects", f"{endpoint}/{name}/objects"
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def report_url(where: str, finished: FinishedRun, request: pytest.FixtureRequest) -> str:
    """Write the report where it is to be opened from, and the address a browser opens it at."""
    if where == "bucket":
        url, address = request.getfixturevalue("bucket")
        storage = Storage(url)
        copy_batch(finished, storage)
        key = write_report(finished.engine, storage, finished.batch_id)
        return f"{address}/{key}"
    key = write_report(finished.engine, finished.storage, finished.batch_id)
    if where == "file":
        return (finished.folder / "var" / "objects" / key).as_uri()
    return f"{request.getfixturevalue('served')}/{key}"


def copy_batch(finished: FinishedRun, storage: Storage) -> None:
    """The run's pictures and sheets into the bucket, typed as a collector would store them; the
    report and its thumbnails are left to ``write_report`` to make there."""
    root = finished.folder / "var" / "objects"
    for path in (root / finished.batch_folder).rglob("*"):
        key = path.relative_to(root).as_posix()
        if path.is_file() and "/thumbs/" not in key and not key.endswith(REPORT):
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            obstore.put(storage.store, key, path.read_bytes(), attributes={"Content-Type": kind})


@pytest.mark.parametrize("where", ["folder", "file", "bucket"])
def test_the_report_opens_without_error_showing_every_thumbnail_and_the_counts_of_genq_status(
    chromium: Any, finished: FinishedRun, request: pytest.FixtureRequest, where: str
):
    url = report_url(where, finished, request)
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    response = page.goto(url, wait_until="load", timeout=SECONDS * 1000)
    if where != "file":
        assert response is not None and response.headers["content-type"].startswith("text/html")
    scroll_to_the_bottom(page)
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=SECONDS * 1000)
    images = page.eval_on_selector_all("img", "all => all.map(i => [i.getAttribute('src'), i.naturalWidth])")
    frames = animation_frames(page)
    counts = page.eval_on_selector_all(
        "[id^=count-]", "all => all.map(e => [e.id.slice(6), Number(e.dataset.count), e.textContent.trim()])"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"report-{where}.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    print(f"screenshot: {screenshot}")

    assert problems == []
    thumbnails = [src for src, _ in images if src.startswith("thumbs/")]
    assert len(thumbnails) == finished.status_json()["images"]
    assert [(src, width) for src, width in images if width <= 0] == []
    assert frames and all(len(seen) >= min(2, count) for count, seen in frames), frames  # each one plays
    status = finished.status_json()
    shown = {state: number for state, number, _ in counts}
    assert all(str(number) == text for _, number, text in counts)  # what a person reads is the data
    assert {state: shown[state] for state in status["counts"]} == status["counts"]
    assert (shown["images"], shown["total"]) == (status["images"], status["total"])
    assert Image.open(io.BytesIO(screenshot.read_bytes())).size[0] == 1280


def scroll_to_the_bottom(page: Any) -> None:
    """A screen at a time, so every lazy thumbnail comes near the viewport and loads."""
    height = page.evaluate("document.documentElement.scrollHeight")
    for top in range(0, height + 900, 600):
        page.evaluate(f"window.scrollTo(0, {top})")
        page.wait_for_timeout(50)


def animation_frames(page: Any) -> list[tuple[int, set[str]]]:
    """Each sheet animation's frame count, and the frames its canvas showed over a second and a half."""
    counts = page.eval_on_selector_all("canvas.animation", "all => all.map(c => JSON.parse(c.dataset.frames).length)")
    seen: list[set[str]] = [set() for _ in counts]
    for _ in range(15):
        shown = page.eval_on_selector_all("canvas.animation", "all => all.map(c => c.dataset.frame || '')")
        for place, frame in enumerate(shown):
            if frame:
                seen[place].add(frame)
        page.wait_for_timeout(100)
    return list(zip(counts, seen, strict=True))


def test_a_5000_picture_report_opens_fast_and_loads_only_the_thumbnails_in_sight(chromium: Any, tmp_path: Path):
    from jobs.db import make_engine, migrate
    from jobs.report import thumbnail
    from jobs.storage import batch_folder
    from tests.test_report import assets, finished_rows, png, thumb_key

    engine = make_engine(f"sqlite:///{tmp_path / 'genq.db'}")
    migrate(engine)
    storage = Storage(f"file://{tmp_path / 'objects'}")
    batch = finished_rows(engine, tmp_path, 5000, failed_every=50)
    assert batch.id is not None
    folder = batch_folder(batch.id, batch.name)
    tiny = thumbnail(png(32, 32))
    for asset in assets(engine, batch.id):
        storage.put(thumb_key(folder, asset.key), tiny)
    key = write_report(engine, storage, batch.id)
    engine.dispose()
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url) if "/thumbs/" in r.url else None)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

    with serving(tmp_path / "objects") as address:
        page.goto(f"{address}/{key}", wait_until="load", timeout=SECONDS * 1000)
        took = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000
        page.wait_for_load_state("networkidle")
        page.evaluate("document.getElementById('pictures').scrollIntoView()")
        page.wait_for_timeout(500)
        first = len(requested)
        print(f"loaded in {took:.2f} s; {first} thumbnails fetched with the grid in sight")
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        page.wait_for_timeout(500)
        page.close()

    assert problems == []
    assert took < 5, f"{took:.1f} s to load"
    assert 0 < first < 500, f"{first} thumbnails fetched with the grid's first rows in sight"
    assert len(requested) > first  # scrolling down fetches the ones now in sight
