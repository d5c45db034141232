"""One sandbox per test module, over real HTTP on loopback, reset before every test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """Zero latency, no limits, pictures 128 px on the long side."""
    with SandboxServer(SandboxConfig(image_long_side=128)) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_world(sandbox: SandboxServer) -> None:
    sandbox.reset()


@pytest.fixture(scope="module")
def control(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    """A client of the sandbox's own routes, ``/_sandbox/...``."""
    with httpx.Client(base_url=f"{sandbox.url}/_sandbox", timeout=10.0) as client:
        yield client
