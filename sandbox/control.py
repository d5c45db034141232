"""The sandbox's own routes under ``/_sandbox``: its record, a reset, run-time config, sample pictures.

These are how tests and demos steer and judge the farm; no provider has them. The sample pictures
exist because this machine has no network: an upload test needs some URL to fetch a picture from.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import PurePosixPath

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.images import draw, encode
from sandbox.state import World, picture_seed

SAMPLE_FORMATS = {
    "png": ("PNG", "image/png"),
    "jpg": ("JPEG", "image/jpeg"),
    "jpeg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
    "gif": ("GIF", "image/gif"),
    "bmp": ("BMP", "image/bmp"),
}
SAMPLE_SIDE = 64
MAX_SAMPLE_SIDE = 8192


def routes(world: World, providers: Collection[str]) -> list[Route]:
    async def stats(request: Request) -> Response:
        return JSONResponse(world.stats.as_json())

    async def reset(request: Request) -> Response:
        world.reset()
        return JSONResponse({"reset": True})

    async def get_config(request: Request) -> Response:
        return JSONResponse(world.config.model_dump())

    async def put_config(request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in providers:
            return JSONResponse({"error": f"unknown provider {provider!r}; served: {sorted(providers)}"}, 404)
        try:
            changes = await request.json()
        except ValueError:
            changes = None
        if not isinstance(changes, dict):
            return JSONResponse({"error": "the body must be a JSON object of ProviderConfig fields"}, 400)
        try:
            world.config = world.config.with_provider(provider, changes)
        except ValidationError as error:
            return JSONResponse({"error": error.errors(include_url=False, include_context=False)}, 400)
        return JSONResponse(world.config.provider(provider).model_dump())

    async def sample(request: Request) -> Response:
        """``/_sandbox/samples/cat.png?width=&height=``: a picture named by its file name, in its format."""
        name = PurePosixPath(request.path_params["name"])
        known = SAMPLE_FORMATS.get(name.suffix.lstrip(".").lower())
        try:
            width = int(request.query_params.get("width", SAMPLE_SIDE))
            height = int(request.query_params.get("height", SAMPLE_SIDE))
        except ValueError:
            width = height = 0
        if known is None or not (0 < width <= MAX_SAMPLE_SIDE and 0 < height <= MAX_SAMPLE_SIDE):
            return JSONResponse({"error": f"no sample {name}: use one of {sorted(SAMPLE_FORMATS)}, sides 1-8192"}, 404)
        image_format, content_type = known
        body = await run_in_threadpool(_sample_bytes, str(name), width, height, image_format)
        return Response(body, media_type=content_type)

    return [
        Route("/stats", stats, methods=["GET"]),
        Route("/reset", reset, methods=["POST"]),
        Route("/config", get_config, methods=["GET"]),
        Route("/config/{provider}", put_config, methods=["PUT"]),
        Route("/samples/{name}", sample, methods=["GET"]),
    ]


def _sample_bytes(name: str, width: int, height: int, image_format: str) -> bytes:
    return encode(draw(width, height, picture_seed(name), PurePosixPath(name).stem), image_format)
