"""A sprite's frames become one sheet and three atlases that put every frame back exactly as it was."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from jobs.errors import PictureRefused
from jobs.sheets import Frame, Sheet, SheetOptions, pack_sheet

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (240, 200, 30), (200, 40, 220), (30, 210, 220)]


def drawing(
    index: int, size: tuple[int, int] = (32, 32), border: tuple[int, int, int, int] = (3, 5, 7, 2)
) -> Image.Image:
    """A frame as a sprite looks: a patterned figure (every pixel differs from its neighbours, so a
    rectangle one pixel off shows) inside a transparent border (left, top, right, bottom)."""
    width, height = size
    left, top, right, bottom = border
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    red, green, blue = COLOURS[index % len(COLOURS)]
    for y in range(top, height - bottom):
        for x in range(left, width - right):
            image.putpixel((x, y), (red, (green + 9 * x) % 256, (blue + 13 * y) % 256, 255 - (x + y) % 3 * 60))
    return image


def encoded(image: Image.Image, image_format: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


def frames(count: int, animation: str = "walk", **drawn: Any) -> list[Frame]:
    return [Frame(f"hero/{animation}-{i + 1}", animation, encoded(drawing(i, **drawn))) for i in range(count)]


def opened(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGBA")


def plain(image: Image.Image) -> Image.Image:
    """``image`` with every fully transparent pixel made (0, 0, 0, 0): transparent is transparent."""
    image = image.convert("RGBA")
    seen = image.getchannel("A").point(lambda alpha: 255 if alpha else 0)
    return Image.composite(image, Image.new("RGBA", image.size), seen)


def put_back(sheet: Sheet, name: str) -> Image.Image:
    """The frame as an engine draws it from the TexturePacker atlas: its rectangle cut from the sheet,
    placed at its offset in a canvas of its source size."""
    entry = sheet.atlas["frames"][name]
    rect, offset, source = entry["frame"], entry["spriteSourceSize"], entry["sourceSize"]
    pixels = opened(sheet.png).crop((rect["x"], rect["y"], rect["x"] + rect["w"], rect["y"] + rect["h"]))
    canvas = Image.new("RGBA", (source["w"], source["h"]), (0, 0, 0, 0))
    canvas.paste(pixels, (offset["x"], offset["y"]))
    return canvas


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and plain(a).tobytes() == plain(b).tobytes()


@pytest.mark.parametrize(
    "options",
    [SheetOptions(), SheetOptions(padding=3), SheetOptions(trim=True), SheetOptions(padding=2, trim=True)],
    ids=["plain", "padded", "trimmed", "trimmed and padded"],
)
def test_every_frame_comes_back_from_the_sheet_pixel_for_pixel(options: SheetOptions):
    given = frames(5)
    sheet = pack_sheet("hero/walk", given, options, image="walk.png")
    for index, frame in enumerate(given):
        assert same_pixels(put_back(sheet, frame.name), drawing(index)), frame.name
    assert list(sheet.atlas["frames"]) == [frame.name for frame in given]


def test_frames_fill_a_uniform_grid_left_to_right_then_top_to_bottom():
    given = frames(9, size=(20, 12), border=(0, 0, 0, 0))
    sheet = pack_sheet("hero/walk", given, SheetOptions(padding=1), image="walk.png")
    assert sheet.cell == (20, 12)
    assert sheet.grid == (3, 3)  # more than a strip: near-square
    rects = [sheet.atlas["frames"][frame.name]["frame"] for frame in given]
    assert [(r["x"], r["y"]) for r in rects] == [(1 + 21 * (i % 3), 1 + 13 * (i // 3)) for i in range(9)]
    assert opened(sheet.png).size == (3 * 20 + 4 * 1, 3 * 12 + 4 * 1)
    assert sheet.atlas["meta"]["size"] == {"w": 64, "h": 40}


@pytest.mark.parametrize(
    ("count", "side", "grid"),
    [(1, 32, (1, 1)), (4, 32, (4, 1)), (8, 32, (8, 1)), (9, 32, (3, 3)), (8, 640, (3, 3)), (6, 640, (6, 1))],
)
def test_a_short_strip_is_one_row_and_anything_larger_is_near_square(count: int, side: int, grid: tuple[int, int]):
    # One row up to 8 frames while it is at most 4096 pixels wide; 8 frames of 640 px would be 5120.
    square = encoded(Image.new("RGBA", (side, side), COLOURS[0]))
    sheet = pack_sheet("s", [Frame(f"f{i}", "walk", square) for i in range(count)], image="s.png")
    assert sheet.grid == grid


def test_frames_of_different_sizes_share_cells_as_large_as_the_largest():
    small = Frame("a", "idle", encoded(drawing(0, size=(16, 24), border=(0, 0, 0, 0))))
    wide = Frame("b", "idle", encoded(drawing(1, size=(40, 10), border=(0, 0, 0, 0))))
    sheet = pack_sheet("mixed", [small, wide], image="mixed.png")
    assert sheet.cell == (40, 24)
    assert sheet.atlas["frames"]["a"]["frame"] == {"x": 0, "y": 0, "w": 16, "h": 24}
    assert sheet.atlas["frames"]["b"]["frame"] == {"x": 40, "y": 0, "w": 40, "h": 10}  # top-left of its cell
    png = opened(sheet.png)
    assert png.size == (80, 24)
    assert png.crop((16, 0, 40, 24)).getbbox() is None  # the rest of a smaller frame's cell is transparent


def test_trimming_keeps_where_each_frame_sat_in_its_picture():
    bordered = Frame("bordered", "walk", encoded(drawing(0, border=(3, 5, 7, 2))))
    full = Frame("full", "walk", encoded(drawing(1, border=(0, 0, 0, 0))))
    sheet = pack_sheet("t", [bordered, full], SheetOptions(trim=True), image="t.png")
    entry = sheet.atlas["frames"]["bordered"]
    assert entry["trimmed"] is True
    assert entry["spriteSourceSize"] == {"x": 3, "y": 5, "w": 22, "h": 25}
    assert entry["sourceSize"] == {"w": 32, "h": 32}
    assert (entry["frame"]["w"], entry["frame"]["h"]) == (22, 25)
    untouched = sheet.atlas["frames"]["full"]
    assert untouched["trimmed"] is False
    assert untouched["spriteSourceSize"] == {"x": 0, "y": 0, "w": 32, "h": 32}
    assert sheet.cell == (32, 32)


def test_trimming_shrinks_the_cells_to_the_largest_trimmed_frame():
    sheet = pack_sheet("t", frames(4, border=(4, 4, 4, 4)), SheetOptions(trim=True), image="t.png")
    assert sheet.cell == (24, 24)
    assert opened(sheet.png).size == (96, 24)


def test_a_frame_with_nothing_drawn_trims_to_one_transparent_pixel():
    empty = Frame("empty", "walk", encoded(Image.new("RGBA", (32, 32), (0, 0, 0, 0))))
    sheet = pack_sheet("t", [*frames(1), empty], SheetOptions(trim=True), image="t.png")
    entry = sheet.atlas["frames"]["empty"]
    assert (entry["frame"]["w"], entry["frame"]["h"]) == (1, 1)
    assert entry["sourceSize"] == {"w": 32, "h": 32}
    assert same_pixels(put_back(sheet, "empty"), Image.new("RGBA", (32, 32)))


def test_a_failed_frame_leaves_its_cell_empty_and_is_named_missing():
    given = frames(4)
    given[1] = Frame(given[1].name, "walk", None)
    sheet = pack_sheet("hero/walk", given, image="walk.png")
    assert sheet.missing == ["hero/walk-2"]
    assert sheet.grid == (4, 1)  # the failed frame keeps its place
    assert opened(sheet.png).crop((32, 0, 64, 32)).getbbox() is None
    assert "hero/walk-2" not in sheet.atlas["frames"]
    assert sheet.atlas["animations"] == {"walk": ["hero/walk-1", "hero/walk-3", "hero/walk-4"]}
    assert sheet.atlas["frames"]["hero/walk-3"]["frame"]["x"] == 64
    assert len(sheet.aseprite["frames"]) == 3
    assert sheet.aseprite["meta"]["frameTags"] == [{"name": "walk", "from": 0, "to": 2, "direction": "forward"}]
    assert [len(a["frames"]) for a in godot(sheet).animations] == [3]


def test_an_animation_whose_every_frame_failed_is_left_out_of_the_atlases():
    given = [*frames(2, "walk"), Frame("hero/idle-1", "idle", None), Frame("hero/idle-2", "idle", None)]
    sheet = pack_sheet("hero", given, image="hero.png")
    assert sheet.missing == ["hero/idle-1", "hero/idle-2"]
    assert list(sheet.atlas["animations"]) == ["walk"]
    assert [tag["name"] for tag in sheet.aseprite["meta"]["frameTags"]] == ["walk"]
    assert [a["name"] for a in godot(sheet).animations] == ["walk"]


def test_a_sheet_with_no_picture_at_all_is_refused():
    with pytest.raises(PictureRefused, match="none of its 2 frames") as refused:
        pack_sheet("hero/walk", [Frame("a", "walk", None), Frame("b", "walk", None)], image="walk.png")
    assert refused.value.final


def test_aseprite_frames_carry_their_durations_and_tags_index_them_in_order():
    walk = [Frame(f"w{i}", "walk", encoded(drawing(i)), 125) for i in range(4)]
    idle = [Frame("i0", "idle", encoded(drawing(4)), 500), Frame("i1", "idle", encoded(drawing(5)), 250)]
    sheet = pack_sheet("hero", walk + idle, image="hero.png")
    aseprite = sheet.aseprite
    # Phaser's createFromAseprite looks frames up by index, as Aseprite's "{frame}" file names are.
    assert [f["filename"] for f in aseprite["frames"]] == ["0", "1", "2", "3", "4", "5"]
    assert [f["duration"] for f in aseprite["frames"]] == [125, 125, 125, 125, 500, 250]
    assert aseprite["meta"]["frameTags"] == [
        {"name": "walk", "from": 0, "to": 3, "direction": "forward"},
        {"name": "idle", "from": 4, "to": 5, "direction": "forward"},
    ]
    assert [f["frame"] for f in aseprite["frames"]] == [sheet.atlas["frames"][f.name]["frame"] for f in walk + idle]
    meta = aseprite["meta"]
    assert (meta["image"], meta["format"], meta["scale"]) == ("hero.png", "RGBA8888", "1")
    assert meta["size"] == sheet.atlas["meta"]["size"]


def test_an_animation_given_in_pieces_is_brought_together():
    # Rows ordered by frame number can interleave two animations; each must be one run of cells.
    walk, idle = frames(2, "walk"), frames(2, "idle")
    sheet = pack_sheet("hero", [walk[0], idle[0], walk[1], idle[1]], image="hero.png")
    assert list(sheet.atlas["frames"]) == ["hero/walk-1", "hero/walk-2", "hero/idle-1", "hero/idle-2"]
    assert [(t["from"], t["to"]) for t in sheet.aseprite["meta"]["frameTags"]] == [(0, 1), (2, 3)]


def test_the_texturepacker_atlas_has_the_fields_phaser_and_pixijs_read():
    sheet = pack_sheet("hero", frames(2, "walk") + frames(2, "idle"), image="hero.png")
    atlas = sheet.atlas
    for entry in atlas["frames"].values():
        assert set(entry) == {"frame", "rotated", "trimmed", "spriteSourceSize", "sourceSize"}
        assert entry["rotated"] is False
    assert atlas["animations"] == {"walk": ["hero/walk-1", "hero/walk-2"], "idle": ["hero/idle-1", "hero/idle-2"]}
    meta = atlas["meta"]
    assert meta["app"] == "genq" and meta["version"]
    assert (meta["image"], meta["format"], meta["scale"]) == ("hero.png", "RGBA8888", "1")
    assert meta["size"] == {"w": 128, "h": 32}
    json.dumps(atlas)  # stored as JSON as it is


def test_the_godot_resource_names_every_frame_it_defines_inside_the_sheet():
    walk = [Frame(f"w{i}", "walk", encoded(drawing(i)), 125) for i in range(4)]
    idle = [Frame("i0", "idle", encoded(drawing(4)), 500), Frame("i1", "idle", encoded(drawing(5)), 1000)]
    sheet = pack_sheet("hero", walk + idle, SheetOptions(padding=2), image="hero.png")
    resource = godot(sheet)
    assert resource.header == {"type": "SpriteFrames", "format": "3", "load_steps": str(2 + 6)}
    assert [e["path"] for e in resource.external.values()] == ["hero.png"]
    assert len(resource.textures) == 6
    width, height = opened(sheet.png).size
    regions = []
    for texture in resource.textures.values():
        assert texture["atlas"] == {"ExtResource": "1"}
        x, y, w, h = texture["region"]["Rect2"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width and y + h <= height
        regions.append({"x": x, "y": y, "w": w, "h": h})
    assert regions == [sheet.atlas["frames"][f.name]["frame"] for f in walk + idle]
    animations = {a["name"]: a for a in resource.animations}
    assert list(animations) == ["walk", "idle"]
    walking = animations["walk"]
    assert (len(walking["frames"]), walking["speed"], walking["loop"]) == (4, 8.0, True)
    assert len(animations["idle"]["frames"]) == 2
    assert animations["idle"]["speed"] == 2.0  # from its first frame; the second lasts twice as long
    assert [f["duration"] for f in animations["idle"]["frames"]] == [1.0, 2.0]
    for animation in resource.animations:
        for entry in animation["frames"]:
            assert entry["texture"]["SubResource"] in resource.textures


def test_the_godot_resource_keeps_a_trimmed_frames_place_in_its_margin():
    sheet = pack_sheet("t", [Frame("f", "walk", encoded(drawing(0, border=(3, 5, 7, 2))))], SheetOptions(trim=True),
                       image="t.png")  # fmt: skip
    (texture,) = godot(sheet).textures.values()
    assert texture["region"]["Rect2"] == [0, 0, 22, 25]
    assert texture["margin"]["Rect2"] == [3, 5, 32 - 22, 32 - 25]  # offset, then what was cut off


def test_names_godot_would_misread_are_escaped():
    sheet = pack_sheet("q", [Frame("f", 'say "hi"\\', encoded(drawing(0)))], image='my "sheet".png')
    resource = godot(sheet)
    assert [a["name"] for a in resource.animations] == ['say "hi"\\']
    assert [e["path"] for e in resource.external.values()] == ['my "sheet".png']


def test_jpeg_and_webp_frames_are_taken():
    jpeg = Frame("j", "walk", encoded(drawing(0, border=(0, 0, 0, 0)).convert("RGB"), "JPEG"))
    webp = Frame("w", "walk", encoded(drawing(1), "WEBP"))
    sheet = pack_sheet("s", [jpeg, webp], image="s.png")
    assert sheet.atlas["frames"]["j"]["frame"] == {"x": 0, "y": 0, "w": 32, "h": 32}
    assert opened(sheet.png).getpixel((0, 0))[3] == 255  # a JPEG is opaque


def test_a_sheet_over_the_pixel_cap_is_refused_before_it_is_drawn():
    given = frames(4)  # 4 x 32 x 32 = 4096 pixels
    pack_sheet("s", given, image="s.png", max_pixels=4096)
    with pytest.raises(PictureRefused, match="over the") as refused:
        pack_sheet("s", given, SheetOptions(padding=1), image="s.png", max_pixels=4096)
    assert refused.value.final


def test_a_picture_over_the_pixel_cap_is_refused_unread():
    with pytest.raises(PictureRefused, match="32x32") as refused:
        pack_sheet("s", frames(1), image="s.png", max_pixels=1000)
    assert refused.value.final


@pytest.mark.parametrize(
    "picture",
    [b"<html>502 Bad Gateway</html>", encoded(drawing(0))[:60], encoded(drawing(0).convert("RGB"), "GIF")],
    ids=["not an image", "a cut-off PNG", "a GIF"],
)
def test_a_picture_that_is_not_a_whole_png_jpeg_or_webp_is_refused(picture: bytes):
    with pytest.raises(PictureRefused, match="frame 'bad'") as refused:
        pack_sheet("s", [*frames(1), Frame("bad", "walk", picture)], image="s.png")
    assert refused.value.final


def test_two_frames_of_one_name_are_a_mistake_of_the_caller():
    with pytest.raises(ValueError, match="hero/walk-1"):
        pack_sheet("s", frames(2) + frames(1), image="s.png")


# A reader of the Godot text resource format, as much of it as a SpriteFrames resource uses.


@dataclass
class Resource:
    header: dict[str, str]
    external: dict[str, dict[str, str]] = field(default_factory=dict)
    textures: dict[str, dict[str, Any]] = field(default_factory=dict)
    animations: list[dict[str, Any]] = field(default_factory=list)


SECTION = re.compile(r'^\[(gd_resource|ext_resource|sub_resource|resource)((?: \w+=(?:"(?:[^"\\]|\\.)*"|\S+?))*)\]$')
ATTRIBUTE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^ \]]+)')


def godot(sheet: Sheet) -> Resource:
    return read_godot(sheet.godot)


def read_godot(text: str) -> Resource:
    """A ``.tres`` read section by section; every value must be a well-formed Godot variant."""
    resource: Resource | None = None
    current: dict[str, Any] = {}
    lines = text.splitlines()
    assert lines[0].startswith("[gd_resource ")
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip():
            continue
        section = SECTION.match(line)
        if section:
            kind, attributes = section.group(1), dict(ATTRIBUTE.findall(section.group(2)))
            attributes = {k: json.loads(v) if v.startswith('"') else v for k, v in attributes.items()}
            current = {}
            if kind == "gd_resource":
                resource = Resource(attributes)
            elif kind == "ext_resource":
                assert resource is not None and attributes["type"] == "Texture2D"
                resource.external[attributes["id"]] = attributes
            elif kind == "sub_resource":
                assert resource is not None and attributes["type"] == "AtlasTexture"
                assert attributes["id"] not in resource.textures
                resource.textures[attributes["id"]] = current
            continue
        key, equals, value = line.partition(" = ")
        assert equals, f"not a property: {line!r}"
        while value.count("[") + value.count("{") > value.count("]") + value.count("}"):
            value += "\n" + lines[index]
            index += 1
        parsed = variant(value)
        if key == "animations":
            assert resource is not None
            resource.animations = parsed
        else:
            current[key] = parsed
    assert resource is not None
    for texture in resource.textures.values():
        assert texture["atlas"]["ExtResource"] in resource.external
    return resource


def variant(text: str) -> Any:
    """A Godot variant as JSON would hold it: ``Rect2(...)`` and the resource references become
    one-key objects, ``&"name"`` (a StringName) a string. Anything else Godot would not read fails."""
    text = re.sub(r'(SubResource|ExtResource)\(("(?:[^"\\]|\\.)*")\)', r'{"\1": \2}', text)
    text = re.sub(r"Rect2\(([-\d., ]+)\)", r'{"Rect2": [\1]}', text)
    text = re.sub(r'&(")', r"\1", text)
    return json.loads(text)
