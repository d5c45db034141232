"""A provider's picture is checked before it is stored: a real image of a known type, or refused."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from workers.collect import CollectError, check_picture


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
    with pytest.raises(CollectError) as refused:
        check_picture(body)
    assert refused.value.final


def test_an_image_of_an_unexpected_type_is_refused():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="BMP")
    with pytest.raises(CollectError, match="BMP"):
        check_picture(out.getvalue())
