"""Phaser 3, in headless Chromium, loads the sheets a sandbox run packed, as a game would.

``genq run`` of the qtpixel example (a walk of 4 frames and an idle of 2) leaves its sheets in the
batch's ``sheets/`` folder; a local page loads each with ``load.atlas`` and ``load.aseprite`` and
reports what Phaser made of it. Every frame must be there with the atlas's rectangle, the animation
must have its sprite mode's frames, and a frame Phaser draws must be the stored picture, pixel for
pixel. A sheet packed with ``trim`` and ``padding`` from the same pictures is loaded the same way,
so the offsets that put a trimmed frame back are proved in the engine, not by reading JSON. The
run's Godot resources, which no browser reads, are held to the PNG beside them.

Debian's ``chromium`` is driven by Playwright (never a browser of Playwright's own); Phaser comes
from ``tests/browser/package.json``. Without chromium, Playwright or Phaser the browser tests skip,
naming what to install; under CI (``CI=true``) they fail instead.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode

import pytest
from PIL import Image

from jobs.sheets import Frame, SheetOptions, pack_sheet
from tests.conftest import ROOT
from tests.test_sheets import read_godot as godot_resource

BROWSER_FILES = ROOT / "tests" / "browser"
PHASER = BROWSER_FILES / "node_modules" / "phaser" / "dist" / "phaser.min.js"
EXAMPLE = ROOT / "batches" / "examples" / "qtpixel.yaml"
SPRITES = {"hero/walk": ("walk", 4), "hero/idle": ("idle", 2)}
"""The example's sprite sheets: their animation (the sprite mode) and its frame count."""
PAGE_SECONDS = 60
QUIET_CHROMIUM = (
    "--disable-gpu",
    "--disable-quic",
    "--disable-domain-reliability",
    "--dns-prefetch-disable",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
"""Beside Playwright's own switches (background networking, updates and sync off): the page is on
127.0.0.1, and no host name resolves, so whatever the browser would ask of the internet on its own
(an update check, an account list) is never looked up, let alone sent."""


def missing(what: str, install: str) -> NoReturn:
    """Skip for want of a browser tool, naming the install; under CI, where it must be there, fail."""
    message = f"{what} is not installed: {install}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def chromium_binary() -> str | None:
    """Debian's chromium itself, not its launcher script: the script turns on remote extensions and
    hands the browser Google's API keys, so it asks Google's hosts for updates and accounts."""
    launcher = shutil.which("chromium")
    if launcher is None:
        return None
    binary = Path(launcher).resolve().parent.parent / "lib" / "chromium" / "chromium"
    return str(binary) if binary.is_file() else launcher


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    executable = chromium_binary()
    if executable is None:
        missing("chromium", "apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python", "pip install -e '.[test]'")
    if not PHASER.is_file():
        missing("Phaser", "npm install --prefix tests/browser")
    with sync_playwright() as playwright:
        # The page and everything it loads are on loopback; nothing else is to be asked for.
        browser = playwright.chromium.launch(executable_path=executable, args=list(QUIET_CHROMIUM))
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def batch_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a sandbox run of the qtpixel example leaves behind."""
    here = tmp_path_factory.mktemp("run")
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", str(EXAMPLE), "--sandbox"],
        cwd=here, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (folder,) = (here / "var" / "objects").iterdir()
    return folder


@pytest.fixture(scope="module")
def site(batch_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the page server serves: the page, Phaser, the run's folder as ``run/``, and ``packed/``,
    the run's walk packed again with trimming and padding."""
    root = tmp_path_factory.mktemp("site")
    for name in ("sheet.html", "sheet.js"):
        shutil.copy(BROWSER_FILES / name, root / name)
    shutil.copy(PHASER, root / "phaser.min.js")
    shutil.copytree(batch_folder, root / "run")
    frames = [Frame(name, "walk", stored(batch_folder, name).read_bytes(), 125) for name in atlas_names(batch_folder)]
    sheet = pack_sheet("hero/walk", frames, SheetOptions(padding=2, trim=True), image="walk.png")
    packed = root / "packed" / "hero"
    packed.mkdir(parents=True)
    (packed / "walk.png").write_bytes(sheet.png)
    (packed / "walk.json").write_text(json.dumps(sheet.atlas))
    (packed / "walk.aseprite.json").write_text(json.dumps(sheet.aseprite))
    return root


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    """``site`` over HTTP on loopback: Phaser's loader fetches with XHR, which a file:// page cannot."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def atlas_names(batch_folder: Path, sheet: str = "hero/walk") -> list[str]:
    return list(json.loads((batch_folder / "sheets" / f"{sheet}.json").read_text())["frames"])


def stored(batch_folder: Path, name: str) -> Path:
    """The picture the run stored for frame ``name`` (``hero/walk-3`` is ``hero/walk-3.png``)."""
    (path,) = batch_folder.glob(f"{name}.*")
    return path


def in_phaser(chromium: Any, url: str) -> dict[str, Any]:
    """What the page reports once Phaser has loaded the sheet and drawn the frame; no page error."""
    page = chromium.new_page()
    complaints: list[str] = []

    def heard(message: Any) -> None:
        # Phaser says what it cannot make sense of (a frame it cannot find, a malformed atlas) as a warning.
        if message.type in ("error", "warning"):
            complaints.append(message.text)

    page.on("console", heard)
    page.on("pageerror", lambda error: complaints.append(str(error)))
    try:
        page.goto(url)
        page.wait_for_function("window.genq && (window.genq.done || window.genq.errors.length)",
                               timeout=PAGE_SECONDS * 1000)  # fmt: skip
        seen: dict[str, Any] = page.evaluate("window.genq")
    finally:
        page.close()
    assert seen["errors"] == [] and complaints == []
    return seen


def phaser_view(atlas_frames: dict[str, Any]) -> dict[str, Any]:
    """An atlas's frames as Phaser's texture reports them."""
    return {
        name: {
            "frame": entry["frame"],
            "trimmed": entry["trimmed"],
            "spriteSourceSize": {"x": entry["spriteSourceSize"]["x"], "y": entry["spriteSourceSize"]["y"]},
            "sourceSize": entry["sourceSize"],
        }
        for name, entry in atlas_frames.items()
    }


def drawn_halves(data_url: str, width: int, height: int) -> tuple[Image.Image, Image.Image]:
    header, _, payload = data_url.partition(",")
    assert header == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(payload))) as canvas:
        picture = canvas.convert("RGBA")
    assert picture.size == (2 * width, height)
    return picture.crop((0, 0, width, height)), picture.crop((width, 0, 2 * width, height))


def plain(image: Image.Image) -> Image.Image:
    """``image`` with every fully transparent pixel (0, 0, 0, 0): transparent has no colour to keep."""
    image = image.convert("RGBA")
    seen = image.getchannel("A").point(lambda alpha: 255 if alpha else 0)
    return Image.composite(image, Image.new("RGBA", image.size), seen)


def check_sheet(chromium: Any, server: str, site: Path, sheet: str, frame_name: str, animation: str, count: int,
                picture: Path) -> None:  # fmt: skip
    """Load the sheet at ``site/<sheet>`` in Phaser and hold it to its atlases and to the stored
    ``picture`` of ``frame_name``."""
    atlas = json.loads((site / f"{sheet}.json").read_text())
    aseprite = json.loads((site / f"{sheet}.aseprite.json").read_text())
    (index,) = [f["filename"] for f in aseprite["frames"] if f["frame"] == atlas["frames"][frame_name]["frame"]]
    size = atlas["frames"][frame_name]["sourceSize"]
    width, height = size["w"], size["h"]
    query = urlencode({"sheet": sheet, "frame": frame_name, "index": index, "width": width, "height": height})
    seen = in_phaser(chromium, f"{server}/sheet.html?{query}")

    # Every frame, with the rectangle (and trim) of its atlas, by either loader.
    assert seen["atlas"] == phaser_view(atlas["frames"])
    assert seen["aseprite"] == phaser_view({f["filename"]: f for f in aseprite["frames"]})
    assert list(seen["atlas"]) == list(atlas["frames"])

    # The animation has its sprite mode's frames: the atlas's frames of that animation, in order,
    # each lasting as long as the Aseprite file says.
    assert [(a["key"], len(a["frames"])) for a in seen["animations"]] == [(animation, count)]
    steps = seen["animations"][0]["frames"]
    named = atlas["animations"][animation]
    assert [step["frame"] for step in steps] == [atlas["frames"][name]["frame"] for name in named]
    assert [step["duration"] for step in steps] == [frame["duration"] for frame in aseprite["frames"]]

    # The frame Phaser draws is the stored picture, from the atlas and from the Aseprite file alike.
    from_atlas, from_aseprite = drawn_halves(seen["drawn"], width, height)
    with Image.open(picture) as original:
        expected = plain(original)
    assert plain(from_atlas).tobytes() == expected.tobytes()
    assert plain(from_aseprite).tobytes() == expected.tobytes()


@pytest.mark.parametrize("sheet", list(SPRITES))
def test_phaser_reads_a_sheet_genq_packed_as_its_atlases_say(chromium: Any, server: str, site: Path,
                                                              batch_folder: Path, sheet: str):  # fmt: skip
    animation, count = SPRITES[sheet]
    names = atlas_names(batch_folder, sheet)
    assert len(names) == count
    last = names[-1]  # the frame farthest from the sheet's corner: its offsets matter most
    check_sheet(chromium, server, site, f"run/sheets/{sheet}", last, animation, count, stored(batch_folder, last))


def test_phaser_puts_a_trimmed_frame_back_where_it_sat_in_its_picture(chromium: Any, server: str, site: Path,
                                                                      batch_folder: Path):  # fmt: skip
    atlas = json.loads((site / "packed" / "hero" / "walk.json").read_text())
    moved = [name for name, entry in atlas["frames"].items() if entry["trimmed"] and entry["spriteSourceSize"]["y"]]
    assert moved, "the example's frames have transparent borders to trim"
    check_sheet(chromium, server, site, "packed/hero/walk", moved[-1], "walk", 4, stored(batch_folder, moved[-1]))


@pytest.mark.parametrize("sheet", list(SPRITES))
def test_the_godot_resource_of_a_run_names_the_sheet_beside_it(batch_folder: Path, sheet: str):
    animation, count = SPRITES[sheet]
    tres = batch_folder / "sheets" / f"{sheet}.tres"
    resource = godot_resource(tres.read_text())
    (path,) = [external["path"] for external in resource.external.values()]
    with Image.open(tres.parent / path) as png:  # relative to the .tres, as Godot resolves it
        width, height = png.size
    for texture in resource.textures.values():
        x, y, w, h = texture["region"]["Rect2"]
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
    assert [(a["name"], len(a["frames"])) for a in resource.animations] == [(animation, count)]
