"""A provider's picture is checked before it is stored: a real image of a known type, or refused."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from jobs.errors import PictureRefused
from workers.collect import check_picture


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
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", palette) + chunk(b"IDAT", pixels) + chunk(
        b"IEND", b""
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
