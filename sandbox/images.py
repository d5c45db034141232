"""Real PNG pictures of an exact size, so a client's whole path (download, decode, store, measure) runs.

A picture is a gradient with a few shapes and the prompt's first words on it, all drawn from a seed:
the same seed gives the same bytes. Encoding uses a fast compress level, because the sandbox draws on
demand and tests care about the size, not the file size.
"""

from __future__ import annotations

import io
import random
from fractions import Fraction

from PIL import Image, ImageDraw, ImageFont

COMPRESS_LEVEL = 1
WORDS_ON_PICTURE = 4


def size_for_aspect(aspect: str, long_side: int) -> tuple[int, int]:
    """Width and height in pixels of an ``"W:H"`` aspect whose longer side is ``long_side`` pixels.

    The short side is rounded to the nearest pixel (16:9 at 1024 is 1024x576; 21:9 is 1024x439).
    """
    width_part, _, height_part = aspect.partition(":")
    ratio = Fraction(int(width_part), int(height_part))
    if ratio <= 0:
        raise ValueError(f"not an aspect: {aspect!r}")
    if ratio >= 1:
        return long_side, max(1, round(long_side / ratio))
    return max(1, round(long_side * ratio)), long_side


def png_bytes(width: int, height: int, seed: int, text: str, transparent: bool = False) -> bytes:
    """A ``width`` x ``height`` PNG drawn from ``seed`` with the first words of ``text`` written on it.

    ``transparent`` leaves the background fully transparent (RGBA) and draws only the shapes and words.
    """
    return encode(draw(width, height, seed, text, transparent), "PNG")


def draw(width: int, height: int, seed: int, text: str, transparent: bool = False) -> Image.Image:
    """The picture ``png_bytes`` encodes, for callers that want another format."""
    rng = random.Random(seed)
    picture = _background(width, height, rng, transparent)
    pen = ImageDraw.Draw(picture)
    for _ in range(3):
        _shape(pen, width, height, rng)
    words = " ".join(text.split()[:WORDS_ON_PICTURE])
    if words:
        font = _font(max(8, min(width, height) // 10))
        pen.text(
            (width // 20, height // 20), words, font=font, fill=(255, 255, 255, 255),
            stroke_width=1, stroke_fill=(0, 0, 0, 255),
        )  # fmt: skip
    return picture


def encode(picture: Image.Image, image_format: str) -> bytes:
    """``picture`` as a file of ``image_format`` (a Pillow format name: PNG, JPEG, WEBP, GIF, BMP)."""
    if image_format in ("JPEG", "BMP") and picture.mode == "RGBA":
        picture = picture.convert("RGB")
    buffer = io.BytesIO()
    options = {"compress_level": COMPRESS_LEVEL} if image_format == "PNG" else {}
    picture.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def _background(width: int, height: int, rng: random.Random, transparent: bool) -> Image.Image:
    if transparent:
        return Image.new("RGBA", (width, height), (0, 0, 0, 0))
    corners = Image.new("RGB", (2, 2))
    corners.putdata([_colour(rng) for _ in range(4)])
    # Upscaling four pixels is the cheapest smooth gradient, even at 4096 px.
    return corners.resize((width, height), Image.Resampling.BILINEAR)


def _shape(draw: ImageDraw.ImageDraw, width: int, height: int, rng: random.Random) -> None:
    x0, x1 = sorted(rng.randrange(width + 1) for _ in range(2))
    y0, y1 = sorted(rng.randrange(height + 1) for _ in range(2))
    fill = (*_colour(rng), 255)
    if rng.random() < 0.5:
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    else:
        draw.rectangle((x0, y0, x1, y1), fill=fill)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except ImportError:  # Pillow built without FreeType: a fixed small bitmap font
        return ImageFont.load_default()
