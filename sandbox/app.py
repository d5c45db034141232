"""The sandbox as one Starlette app: each provider under ``/<provider id>``, the controls under ``/_sandbox``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount

from sandbox import cloudsway, control, gencraft, girlgenerator, qtpixel, talecraft  # noqa: F401  (each registers)
from sandbox.api import PROVIDERS
from sandbox.config import SandboxConfig
from sandbox.state import World


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """A fresh world served by every registered provider; ``app.state.world`` holds it."""
    world = World(config or SandboxConfig())
    routes: list[BaseRoute] = [Mount("/_sandbox", routes=control.routes(world, PROVIDERS.keys()))]
    for name, api in PROVIDERS.items():
        routes.append(Mount(f"/{name}", routes=api(world).routes(), name=name))
    app = Starlette(routes=routes)
    app.state.world = world
    return app
