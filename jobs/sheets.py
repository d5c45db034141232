"""Sprite sheets: a sprite's frames packed into one PNG, and the atlases game engines read beside it.

Pack once, write many: ``pack_sheet`` decodes the frames, lays them out once (a ``Layout``: where
each frame's pixels are, and how they sit in the picture they were cut from) and hands that layout
to three short writers, each a pure function of it: ``texturepacker_json`` (Phaser's ``load.atlas``,
PixiJS's ``Spritesheet``), ``aseprite_json`` (Phaser's ``load.aseprite`` and
``anims.createFromAseprite``) and ``godot_tres`` (a Godot 4 ``SpriteFrames`` resource).

The layout, which every writer and engine can count on:

- A uniform grid: every cell is as large as the largest frame (after trimming, when trimming), so
  Unity's grid slicer and Godot's ``hframes``/``vframes`` cut the sheet as the atlases do. Nothing
  is rotated or scaled.
- One row for up to ``ROW_FRAMES`` frames while that row is at most ``MAX_ROW_WIDTH`` pixels wide (an
  animation strip, as engines' strip importers expect); otherwise a near-square grid of
  ``ceil(sqrt(n))`` columns, which keeps both sides of a large sheet within what GPUs take.
- Frames fill the cells left to right, then top to bottom, in the order given; only an animation whose
  frames were given apart is brought together at its first frame's place, as Aseprite's ``from``/``to``
  and strip slicers need one run of cells per animation.
- Each frame is drawn at the top-left corner of its cell, at its own size: a smaller frame leaves the
  rest of its cell transparent, and its atlas rectangle is exactly its own pixels.
- ``padding`` is TexturePacker's border padding and shape padding at once: that many transparent
  pixels between neighbouring cells and between the outer cells and the sheet's edge, so a texture
  sampled with filtering never bleeds a neighbour (or the edge wrap) into a frame.
- ``trim`` cuts each frame's fully transparent border off before the cells are sized; the atlases
  keep where the cut pixels sat in the picture (``spriteSourceSize`` and ``sourceSize``, Godot's
  ``margin``), so an engine draws the frame where the untrimmed picture would have put it.
- A failed frame (no picture) keeps its cell, empty, so the frames after it stay where a retry will
  find them; it is left out of every atlas (engines tolerate a missing name, not a 0x0 rectangle)
  and listed in ``Sheet.missing``. An animation none of whose frames was drawn is left out too.

Pictures are opened as ``workers.collect`` opens them: the size is read from the header and checked
against the pixel cap and Pillow's bomb guard before anything is decoded, and the sheet itself is
checked against the same cap before it is drawn.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from PIL import Image, UnidentifiedImageError

from jobs.errors import PictureRefused

DEFAULT_MAX_PIXELS = 64_000_000
"""Pixels a sheet (and each of its pictures) may have: ``GENQ_MAX_IMAGE_PIXELS``'s default."""
ROW_FRAMES = 8
"""Frames a sheet lays out in a single row, if the row fits ``MAX_ROW_WIDTH``."""
MAX_ROW_WIDTH = 4096
"""Pixels: the texture side every WebGL device takes; a single row wider than this wraps instead."""
FORMATS = ("PNG", "JPEG", "WEBP")
"""The picture formats genq stores, and so the only ones a sheet is made from."""


@dataclass(frozen=True)
class Frame:
    """One frame of a sheet, as the batch's rows made it."""

    name: str
    """The frame's name in the atlas (``hero/walk-1``), unique within its sheet."""
    animation: str
    """The animation it belongs to (``walk``)."""
    picture: bytes | None
    """The stored picture (PNG, JPEG or WebP); None for a frame that failed, whose cell stays empty."""
    duration_ms: int = 100
    """How long the frame shows, in milliseconds (1000 / the row's fps)."""

    def __post_init__(self) -> None:
        if self.duration_ms < 1:
            raise ValueError(f"frame {self.name!r}: duration_ms must be at least 1, not {self.duration_ms}")


@dataclass(frozen=True)
class SheetOptions:
    """How a batch's header asks its sheets to be packed."""

    padding: int = 0
    """Transparent pixels between cells and around the sheet's edge."""
    trim: bool = False
    """Cut each frame's transparent border off, keeping its offsets in the atlases."""

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ValueError(f"padding must be 0 or more pixels, not {self.padding}")


@dataclass(frozen=True)
class Sheet:
    """A packed sheet: the PNG and its atlases, ready to be stored side by side."""

    name: str
    png: bytes
    atlas: dict[str, Any]
    """TexturePacker JSON-hash, stored as ``<sheet>.json``."""
    aseprite: dict[str, Any]
    """Aseprite JSON (array form), stored as ``<sheet>.aseprite.json``."""
    godot: str
    """Godot 4 SpriteFrames, stored as ``<sheet>.tres``."""
    missing: list[str]
    """Names of the frames whose cells are empty (they failed)."""
    cell: tuple[int, int]
    """Cell width and height, pixels."""
    grid: tuple[int, int]
    """Columns and rows."""


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Placement:
    """Where one drawn frame's pixels are in the sheet, and where they sat in its own picture."""

    name: str
    animation: str
    duration_ms: int
    frame: Rect
    """The frame's pixels in the sheet."""
    source: tuple[int, int]
    """The picture's own width and height."""
    offset: tuple[int, int]
    """Where ``frame``'s top-left pixel was in the picture: (0, 0) unless trimmed."""

    @property
    def trimmed(self) -> bool:
        return (self.frame.w, self.frame.h) != self.source


@dataclass(frozen=True)
class Layout:
    """One sheet's layout, all that the atlas writers need."""

    name: str
    image: str
    """The PNG's file name, relative to the atlas files."""
    size: tuple[int, int]
    cell: tuple[int, int]
    grid: tuple[int, int]
    placements: tuple[Placement, ...]
    """The drawn frames, in cell order; each animation's frames are one run of them."""
    missing: tuple[str, ...]

    def animations(self) -> list[tuple[str, list[Placement]]]:
        """Each animation with its drawn frames, in the order they first appear."""
        runs: dict[str, list[Placement]] = {}
        for placement in self.placements:
            runs.setdefault(placement.animation, []).append(placement)
        return list(runs.items())


@dataclass(frozen=True)
class _Cut:
    """A decoded frame, after trimming: its pixels and where they were in the picture."""

    pixels: Image.Image
    source: tuple[int, int]
    offset: tuple[int, int]


def pack_sheet(
    name: str,
    frames: Sequence[Frame],
    options: SheetOptions = SheetOptions(),
    *,
    image: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Sheet:
    """Pack ``frames`` into one PNG and write its three atlases, which name the PNG as ``image``
    (its file name relative to them: they are stored side by side).

    Refused (``PictureRefused``, final) when a picture is unreadable or not PNG, JPEG or WebP, when it
    or the sheet would exceed ``max_pixels``, and when no frame has a picture to draw.
    """
    ordered = _grouped(frames)
    names = [frame.name for frame in ordered]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"sheet {name!r}: frame names must be unique; repeated: {', '.join(duplicates)}")
    cuts = _cut_all(name, ordered, options.trim, max_pixels)
    layout = _plan(name, image, ordered, cuts, options)
    width, height = layout.size
    if width * height > max_pixels:
        raise PictureRefused(
            f"sheet {name!r} would be {width}x{height} ({width * height / 1e6:.0f} MP), over the "
            f"{max_pixels / 1e6:.0f} MP limit",
            final=True,
        )
    return Sheet(
        name=name,
        png=_draw(layout, [cut for cut in cuts if cut is not None]),
        atlas=texturepacker_json(layout),
        aseprite=aseprite_json(layout),
        godot=godot_tres(layout),
        missing=list(layout.missing),
        cell=layout.cell,
        grid=layout.grid,
    )


def _plan(name: str, image: str, frames: Sequence[Frame], cuts: Sequence[_Cut | None], options: SheetOptions) -> Layout:
    """The grid and every drawn frame's rectangle; ``cuts[i]`` is ``frames[i]`` decoded, or None."""
    drawn = [cut for cut in cuts if cut is not None]
    if not drawn:
        raise PictureRefused(f"sheet {name!r}: none of its {len(frames)} frames has a picture", final=True)
    cell = (max(cut.pixels.width for cut in drawn), max(cut.pixels.height for cut in drawn))
    pad = options.padding
    columns = grid_columns(len(frames), cell[0], pad)
    rows = math.ceil(len(frames) / columns)
    size = (columns * cell[0] + (columns + 1) * pad, rows * cell[1] + (rows + 1) * pad)
    placements = []
    missing = []
    for index, (frame, cut) in enumerate(zip(frames, cuts, strict=True)):
        if cut is None:
            missing.append(frame.name)
            continue
        column, row = index % columns, index // columns
        x, y = pad + column * (cell[0] + pad), pad + row * (cell[1] + pad)
        rect = Rect(x, y, cut.pixels.width, cut.pixels.height)
        placements.append(Placement(frame.name, frame.animation, frame.duration_ms, rect, cut.source, cut.offset))
    return Layout(name, image, size, cell, (columns, rows), tuple(placements), tuple(missing))


def grid_columns(count: int, cell_width: int, padding: int) -> int:
    """One row for a short strip that fits ``MAX_ROW_WIDTH``, else a near-square grid."""
    if count <= ROW_FRAMES and count * cell_width + (count + 1) * padding <= MAX_ROW_WIDTH:
        return count
    return math.ceil(math.sqrt(count))


def texturepacker_json(layout: Layout) -> dict[str, Any]:
    """TexturePacker's JSON-hash: frames keyed by name, plus ``animations`` (PixiJS plays them)."""
    return {
        "frames": {p.name: _frame_entry(p) for p in layout.placements},
        "animations": {name: [p.name for p in run] for name, run in layout.animations()},
        "meta": _meta(layout),
    }


def aseprite_json(layout: Layout) -> dict[str, Any]:
    """Aseprite's export (array form) with per-frame ``duration`` and ``meta.frameTags``.

    Frames are named by their index (``"0"``, ``"1"``...), as Aseprite's ``{frame}`` filename format
    names them: Phaser's ``createFromAseprite`` looks a tag's frames up by index as texture frame
    names, so ``from``/``to`` are indices into this array (the drawn frames only)."""
    frames: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    for name, run in layout.animations():
        start = len(frames)
        for placement in run:
            frames.append({"filename": str(len(frames)), **_frame_entry(placement), "duration": placement.duration_ms})
        tags.append({"name": name, "from": start, "to": len(frames) - 1, "direction": "forward"})
    return {"frames": frames, "meta": {**_meta(layout), "frameTags": tags}}


def godot_tres(layout: Layout) -> str:
    """A Godot 4 SpriteFrames resource: an AtlasTexture per frame, an animation per animation.

    The sheet is referenced by a path relative to the ``.tres`` (Godot resolves an ``ext_resource``
    path without ``res://`` against the folder of the file that names it), so the pair works wherever
    it is copied into a project. ``speed`` is frames per second taken from an animation's first frame;
    each frame's ``duration`` is its own length relative to that one (1.0 when the fps is even)."""
    textures = []
    for index, placement in enumerate(layout.placements, start=1):
        frame = placement.frame
        lines = [
            f'[sub_resource type="AtlasTexture" id="AtlasTexture_{index}"]',
            'atlas = ExtResource("1")',
            f"region = Rect2({frame.x}, {frame.y}, {frame.w}, {frame.h})",
        ]
        if placement.trimmed:
            (ox, oy), (sw, sh) = placement.offset, placement.source
            lines.append(f"margin = Rect2({ox}, {oy}, {sw - frame.w}, {sh - frame.h})")
        lines.append("filter_clip = true")
        textures.append("\n".join(lines))
    ids = {placement.name: index for index, placement in enumerate(layout.placements, start=1)}
    animations = []
    for name, run in layout.animations():
        base = run[0].duration_ms
        entries = ",\n".join(
            f'{{\n"duration": {_real(p.duration_ms / base)},\n"texture": SubResource("AtlasTexture_{ids[p.name]}")\n}}'
            for p in run
        )
        animations.append(
            f'{{\n"frames": [{entries}],\n"loop": true,\n"name": &{_string(name)},\n"speed": {_real(1000 / base)}\n}}'
        )
    header = f'[gd_resource type="SpriteFrames" load_steps={len(textures) + 2} format=3]'
    texture = f'[ext_resource type="Texture2D" path={_string(layout.image)} id="1"]'
    resource = "[resource]\nanimations = [" + ", ".join(animations) + "]"
    return "\n\n".join([header, texture, *textures, resource]) + "\n"


def _frame_entry(placement: Placement) -> dict[str, Any]:
    frame = placement.frame
    (ox, oy), (sw, sh) = placement.offset, placement.source
    return {
        "frame": {"x": frame.x, "y": frame.y, "w": frame.w, "h": frame.h},
        "rotated": False,
        "trimmed": placement.trimmed,
        "spriteSourceSize": {"x": ox, "y": oy, "w": frame.w, "h": frame.h},
        "sourceSize": {"w": sw, "h": sh},
    }


def _meta(layout: Layout) -> dict[str, Any]:
    width, height = layout.size
    return {
        "app": "genq",
        "version": _genq_version(),
        "image": layout.image,
        "format": "RGBA8888",
        "size": {"w": width, "h": height},
        "scale": "1",
    }


@cache
def _genq_version() -> str:
    try:
        return version("genq")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0"


def _grouped(frames: Sequence[Frame]) -> list[Frame]:
    """``frames`` in order, each animation's frames brought together at its first frame's place."""
    runs: dict[str, list[Frame]] = {}
    for frame in frames:
        runs.setdefault(frame.animation, []).append(frame)
    return [frame for run in runs.values() for frame in run]


def _cut_all(name: str, frames: Sequence[Frame], trim: bool, max_pixels: int) -> list[_Cut | None]:
    """Every frame decoded (and trimmed), one at a time, so what is held stays under the cap: the
    drawn pixels can only fit a sheet of ``max_pixels`` if they add up to less."""
    cuts: list[_Cut | None] = []
    held = 0
    for frame in frames:
        if frame.picture is None:
            cuts.append(None)
            continue
        cut = _cut(_decode(name, frame, max_pixels), trim)
        held += cut.pixels.width * cut.pixels.height
        if held > max_pixels:
            raise PictureRefused(
                f"sheet {name!r}: its frames add up to over the {max_pixels / 1e6:.0f} MP limit", final=True
            )
        cuts.append(cut)
    return cuts


def _cut(picture: Image.Image, trim: bool) -> _Cut:
    source = picture.size
    if not trim:
        return _Cut(picture, source, (0, 0))
    box = picture.getchannel("A").getbbox()
    if box is None:  # nothing but transparency: one pixel keeps a rectangle every engine takes
        box = (0, 0, 1, 1)
    if box == (0, 0, *source):
        return _Cut(picture, source, (0, 0))
    return _Cut(picture.crop(box), source, (box[0], box[1]))


def _decode(sheet: str, frame: Frame, max_pixels: int) -> Image.Image:
    """The frame's picture as RGBA, its size checked from the header before it is decoded."""
    assert frame.picture is not None
    where = f"sheet {sheet!r}, frame {frame.name!r}"
    try:
        with warnings.catch_warnings():
            # Below Pillow's refusal its warning is only noise: the pixel cap is lower.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(frame.picture)) as picture:
                if picture.format not in FORMATS:
                    raise PictureRefused(
                        f"{where}: a picture of type {picture.format}, not PNG, JPEG or WebP", final=True
                    )
                if picture.width * picture.height > max_pixels:
                    raise PictureRefused(
                        f"{where}: a picture of {picture.width}x{picture.height}, over the "
                        f"{max_pixels / 1e6:.0f} MP limit",
                        final=True,
                    )
                return picture.convert("RGBA")
    except Image.DecompressionBombError as error:
        raise PictureRefused(f"{where}: a decompression bomb: {error}", final=True) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise PictureRefused(f"{where}: not a readable image: {error}", final=True) from None


def _draw(layout: Layout, cuts: Sequence[_Cut]) -> bytes:
    sheet = Image.new("RGBA", layout.size, (0, 0, 0, 0))
    for placement, cut in zip(layout.placements, cuts, strict=True):
        sheet.paste(cut.pixels, (placement.frame.x, placement.frame.y))  # replaces, alpha and all
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _string(text: str) -> str:
    """A Godot string literal: JSON's escapes are the ones Godot's parser reads."""
    return json.dumps(text, ensure_ascii=False)


def _real(value: float) -> str:
    """A Godot float: always with a decimal point, as Godot writes them (``10.0``, ``6.666667``)."""
    text = f"{value:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
