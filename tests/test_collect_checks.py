"""A provider's picture is checked before it is stored: a real image of a known type, or refused."""

from __future__ import annotations

import ast
import builtins
import importlib
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import PIL
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, UnidentifiedImageError

from jobs.errors import PictureRefused
from workers.collect import check_picture, shown_url


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def test_a_real_png_is_taken_with_its_size():
    picture = check_picture(png(64, 36))
    assert (picture.width, picture.height, picture.content_type, picture.extension) == (64, 36, "image/png", "png")


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b"",
        png(32, 32)[:60],
    ],
    ids=["an HTML error page", "an empty body", "a cut-off PNG"],
)
def test_what_is_not_a_whole_image_is_refused_for_good(body: bytes):
    with pytest.raises(PictureRefused) as refused:
        check_picture(body)
    assert refused.value.final


def test_an_image_of_an_unexpected_type_is_refused():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="BMP")
    with pytest.raises(PictureRefused, match="BMP"):
        check_picture(out.getvalue())


def png_header(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` x ``height`` in a few bytes: what a bomb looks like on the wire."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8-bit palette
    palette = b"\x00\x00\x00"
    pixels = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", palette)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_for_good_before_it_is_decoded():
    with pytest.raises(PictureRefused, match="decompression bomb") as refused:
        check_picture(png_header(30_000, 30_000))
    assert refused.value.final


def test_a_picture_over_the_pixel_cap_is_refused_with_its_size():
    with pytest.raises(PictureRefused) as refused:
        check_picture(png_header(13_000, 13_000), max_pixels=64_000_000)
    assert refused.value.final
    assert "13000x13000 (169 MP), over the 64 MP limit" in str(refused.value)


def test_a_decompression_bomb_is_refused_with_the_size_its_header_declares():
    with pytest.raises(PictureRefused) as refused:
        check_picture(png_header(30_000, 30_000))
    assert "a decompression bomb: 30000x30000 (900 MP)" in str(refused.value)
    assert "not decoded" in str(refused.value)


def test_an_html_page_served_as_a_picture_is_named_for_what_it_is():
    with pytest.raises(PictureRefused, match=r"not a readable image: an HTML page of 49 bytes") as refused:
        check_picture(b"\n<!DOCTYPE html><html><body>Sign in</body></html>")
    assert "BytesIO" not in str(refused.value)  # Pillow's words name its buffer, not the file


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://cdn.example.com/a/b.png?X-Amz-Signature=abc&X-Amz-Credential=k", "https://cdn.example.com/a/b.png"),
        ("https://user:secret@cdn.example.com:8443/b.png#part", "https://cdn.example.com:8443/b.png"),
        ("data:image/png;base64,iVBORw0KGgo=", "(sent inline)"),
        ("http://host:abc/x.png?token=abc", "'http://host:abc/x.png'"),
    ],
    ids=["signed link", "user info and fragment", "inline", "not a URL"],
)
def test_a_picture_url_is_shown_without_what_may_be_a_credential(url: str, shown: str):
    assert shown_url(url) == shown


# --- every Pillow failure is a final refusal ------------------------------------------------------

MET_WITHOUT_RAISE: tuple[type[BaseException], ...] = (
    struct.error, zlib.error, KeyError, IndexError, TypeError, ZeroDivisionError, OverflowError, MemoryError,
    UnicodeDecodeError, RecursionError, AttributeError, EOFError, OSError, SyntaxError, ValueError,
)  # fmt: skip
"""What Pillow's parsers meet on a hostile file without raising it by name: unpacking, inflating,
indexing and arithmetic on header fields."""


def pillow_raises() -> set[type[BaseException]]:
    """Every exception class Pillow can raise: each name in a ``raise`` of each of its modules,
    resolved in that module (a name that is no class, such as a re-raise of a caught error, is left
    out), each exception class its modules define, and ``MET_WITHOUT_RAISE``."""
    found: set[type[BaseException]] = set(MET_WITHOUT_RAISE)
    for path in sorted(Path(PIL.__file__).parent.glob("*.py")):
        if path.stem.startswith("_"):  # __main__ prints a report when imported; _typing is annotations
            continue
        try:
            module = importlib.import_module(f"PIL.{path.stem}")
        except ImportError:  # an optional dependency (olefile): its names still resolve in builtins
            module = None
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                named = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                cls = _resolve(ast.unparse(named), module)
                if isinstance(cls, type) and issubclass(cls, BaseException):
                    found.add(cls)
        for value in vars(module).values() if module is not None else ():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__.startswith("PIL"):
                found.add(value)
    return found


def _resolve(dotted: str, module: object) -> object:
    first, *rest = dotted.split(".")
    value = getattr(module, first, None) if module is not None else None
    value = value if value is not None else getattr(builtins, first, None)
    for part in rest:
        value = getattr(value, part, None)
    return value


def instance(cls: type[BaseException]) -> BaseException:
    """An instance of ``cls``, whatever its constructor asks."""
    for args in ((f"{cls.__name__} from a hostile file",), (), (1, "cmd"), ("utf-8", b"\xff", 0, 1, "invalid")):
        try:
            return cls(*args)
        except TypeError:
            continue
    raise AssertionError(f"cannot build {cls.__name__}")


class Hostile(ImageFile.ImageFile):
    """A format whose reader raises ``error`` while opening or while verifying: how any of Pillow's
    failures reaches ``check_picture`` through ``Image.open`` as a real plugin's would."""

    format = "HOSTILE"
    format_description = "a reader that fails on demand"
    error: BaseException | None = None
    at = "open"

    def _open(self) -> None:
        if Hostile.at == "open" and Hostile.error is not None:
            raise Hostile.error
        self._size = (8, 8)
        self._mode = "L"

    def verify(self) -> None:
        if Hostile.error is not None:
            raise Hostile.error


@pytest.fixture
def hostile_format() -> Iterator[type[Hostile]]:
    Image.init()
    Image.register_open(Hostile.format, Hostile, lambda prefix: prefix.startswith(b"HOSTILE!"))
    yield Hostile
    Image.OPEN.pop(Hostile.format)
    Image.ID.remove(Hostile.format)
    Hostile.error = None


def test_pillow_raises_only_what_an_except_exception_can_take():
    raised = pillow_raises()
    assert {Image.DecompressionBombError, UnidentifiedImageError, SyntaxError, OSError, ValueError} <= raised
    assert [cls.__name__ for cls in raised if not issubclass(cls, Exception)] == []


@pytest.mark.parametrize("at", ["open", "verify"])
def test_every_error_pillow_can_raise_ends_as_a_final_refusal(hostile_format: type[Hostile], at: str):
    escaped = []
    for cls in sorted(pillow_raises(), key=lambda cls: cls.__qualname__):
        hostile_format.error, hostile_format.at = instance(cls), at
        try:
            check_picture(b"HOSTILE!" + bytes(64))
        except PictureRefused as refused:
            if not refused.final:
                escaped.append(f"{cls.__name__}: not final")
        except BaseException as error:  # what escapes is what the test reports
            escaped.append(f"{cls.__name__}: escaped as {type(error).__name__}")
        else:
            escaped.append(f"{cls.__name__}: taken as a picture")
    assert escaped == []


def pictures() -> dict[str, bytes]:
    """One small real picture of each kind a provider or a broken CDN might send."""
    made = {}
    for kind in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "ICO", "PPM", "TGA"):
        out = io.BytesIO()
        Image.new("RGB", (24, 16), (40, 90, 160)).save(out, format=kind)
        made[kind] = out.getvalue()
    return made


PICTURES = pictures()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(PICTURES)),
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.integers(0, 255)), max_size=6),
)
def test_a_damaged_picture_of_any_kind_is_taken_or_refused_for_good(kind: str, cut: int, flips: list[tuple[int, int]]):
    data = bytearray(PICTURES[kind])
    for where, value in flips:
        if where < len(data):
            data[where] = value
    damaged = bytes(data[: len(data) - cut] if cut else data)
    try:
        picture = check_picture(damaged)
    except PictureRefused as refused:
        assert refused.final
    else:
        assert (picture.width, picture.height) == (24, 16) and kind in ("PNG", "JPEG", "WEBP")
