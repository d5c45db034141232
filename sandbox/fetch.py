"""Fetching a reference picture from a URL, as a provider's upload endpoint does.

Only loopback hosts are fetched: this machine has no network, and a sandbox that reached out would
hide a test's dependence on the outside. Redirects are not followed, for the same reason.
"""

from __future__ import annotations

import io
import ipaddress
from dataclasses import dataclass
from pathlib import PurePosixPath

import httpx
from PIL import Image, UnidentifiedImageError

FETCH_TIMEOUT = 10.0
"""Seconds to wait for the source."""

CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}
"""The picture formats accepted (Pillow's names) and their content types."""


class FetchRefused(Exception):
    """The source cannot be used; the message says why, in words fit for a 400 answer."""


@dataclass(frozen=True)
class Fetched:
    body: bytes
    filename: str
    """The last segment of the URL's path, or ``upload``."""
    image_format: str
    """A key of ``CONTENT_TYPES``."""

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.image_format]


def is_loopback(url: httpx.URL) -> bool:
    if url.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(url.host).is_loopback
    except ValueError:
        return False


async def fetch_picture(source: str, max_bytes: int) -> Fetched:
    """Download ``source`` (at most ``max_bytes``) and check it is a picture of an accepted format."""
    try:
        url = httpx.URL(source)
    except httpx.InvalidURL as error:
        raise FetchRefused(f"source_url is not a URL: {error}") from error
    if url.scheme not in ("http", "https"):
        raise FetchRefused("source_url must be an http or https URL")
    if not is_loopback(url):
        raise FetchRefused("source_url must be on a loopback host in the sandbox (it has no network)")
    body = await _download(url, max_bytes)
    try:
        with Image.open(io.BytesIO(body)) as picture:
            image_format = picture.format or ""
    except (UnidentifiedImageError, OSError) as error:
        raise FetchRefused("source_url is not a picture") from error
    if image_format not in CONTENT_TYPES:
        raise FetchRefused(f"unsupported picture type {image_format}; accepted: png, jpeg, webp, gif, bmp")
    return Fetched(body, PurePosixPath(url.path).name or "upload", image_format)


async def _download(url: httpx.URL, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT) as client, client.stream("GET", url) as response:
            if not response.is_success:
                raise FetchRefused(f"source_url answered HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise FetchRefused(f"source_url is larger than {max_bytes} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as error:
        raise FetchRefused(f"source_url could not be fetched: {error}") from error
    return b"".join(chunks)
