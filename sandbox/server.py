"""Running the sandbox: in a background thread for tests and ``genq run --sandbox``, or in the foreground.

The background server binds its socket before uvicorn starts, on port 0, so the port is free and
known at once, and two test sessions never race for one.
"""

from __future__ import annotations

import pickle
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from sandbox.api import PROVIDERS
from sandbox.app import create_app
from sandbox.config import SandboxConfig
from sandbox.state import World

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
"""Seconds to wait for the server to answer before giving up."""
SHUTDOWN_GRACE = 1
"""Seconds open requests (a hanging submit) get to finish at shutdown before they are cut."""


class _Server(uvicorn.Server):
    """uvicorn serving one sandbox world, which it tells when shutdown begins."""

    def __init__(self, host: str, port: int, config: SandboxConfig) -> None:
        app = create_app(config)
        self.world: World = app.state.world
        uvicorn_config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False,
            lifespan="off", timeout_graceful_shutdown=SHUTDOWN_GRACE,
        )  # fmt: skip
        super().__init__(uvicorn_config)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # A submit whose answer is held back would otherwise be cut off with an error at shutdown.
        self.world.closing = True
        await super().shutdown(sockets)


class SandboxServer:
    """The sandbox on loopback, served by uvicorn in a daemon thread.

    ``with SandboxServer(SandboxConfig(image_long_side=128)) as sandbox:``, then point an account at
    ``sandbox.base_url("gencraft")`` (``http://127.0.0.1:PORT/gencraft``) and judge by ``sandbox.stats()``.
    """

    def __init__(self, config: SandboxConfig | None = None, *, state_file: Path | None = None) -> None:
        self.config = config or SandboxConfig()
        self.state_file = state_file
        """Where the world is kept between runs, so a resumed run finds its tasks as a provider would."""
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._control_client: httpx.Client | None = None

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the sandbox is not running")
        return f"http://{HOST}:{self.port}"

    def base_url(self, provider: str) -> str:
        """What an account of ``provider`` should use as its ``base_url``."""
        return f"{self.url}/{provider}"

    def start(self) -> SandboxServer:
        if self._thread is not None:
            return self
        # IPPROTO_TCP named, or asyncio does not set TCP_NODELAY on accepted connections (40 ms per answer).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        saved = self._load_state()
        try:
            # The same port as last time, so picture URLs handed out then still answer.
            sock.bind((HOST, saved.get("port", 0) if saved else 0))
        except OSError:
            sock.bind((HOST, 0))
        self.port = sock.getsockname()[1]
        server = _Server(HOST, self.port, self.config)
        if saved:
            server.world.restore(saved["world"])
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sandbox", daemon=True)
        self._server, self._thread = server, thread
        # One client for the control calls: a new one costs ~40 ms (its TLS context), every time.
        self._control_client = httpx.Client(base_url=f"{self.url}/_sandbox", timeout=10.0)
        thread.start()
        self._wait_until_answering()
        return self

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._thread is not None and not self._thread.is_alive():
                break
            try:
                self._control("GET", "/config")
                return
            except httpx.HTTPError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the sandbox did not start within {START_TIMEOUT} s")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=SHUTDOWN_GRACE + 10)
        if self._server is not None and self.state_file is not None:
            self._save_state(self._server.world)
        if self._control_client is not None:
            self._control_client.close()
        self._server, self._thread, self._control_client = None, None, None
        self.port = 0

    def _load_state(self) -> dict[str, Any] | None:
        if self.state_file is None or not self.state_file.exists():
            return None
        try:
            with self.state_file.open("rb") as handle:
                saved: dict[str, Any] = pickle.load(handle)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError):
            return None  # a state file of another version: start afresh, as a wiped provider would
        return saved

    def _save_state(self, world: World) -> None:
        assert self.state_file is not None
        partial = self.state_file.with_suffix(".partial")
        with partial.open("wb") as handle:
            pickle.dump({"port": self.port, "world": world.snapshot()}, handle)
        partial.replace(self.state_file)

    def account_settings(self, provider: str) -> dict[str, Any]:
        """What an account of ``provider`` needs to use this sandbox: ``base_url``, ``options``, and
        ``rpm`` when the sandbox limits the provider (the account should not ask for more)."""
        return account_settings(self.config, provider, self.base_url(provider))

    def stats(self) -> dict[str, Any]:
        """What the sandbox saw, as ``GET /_sandbox/stats`` answers it."""
        return self._control("GET", "/stats")

    def reset(self) -> None:
        """Forget every account, task, file and record, and any config changed at run time."""
        self._control("POST", "/reset")

    def configure(self, provider: str, **changes: Any) -> dict[str, Any]:
        """Change some of ``provider``'s ProviderConfig fields now; returns its whole config."""
        return self._control("PUT", f"/config/{provider}", json=changes)

    def _control(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if self._control_client is None:
            raise RuntimeError("the sandbox is not running")
        response = self._control_client.request(method, path, **kwargs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def account_settings(config: SandboxConfig, provider: str, base_url: str) -> dict[str, Any]:
    """An account of ``provider`` on a sandbox of ``config`` served at ``base_url`` (its path included)."""
    api = PROVIDERS[provider]
    settings: dict[str, Any] = {"base_url": base_url + api.base_path}
    if api.account_options:
        settings["options"] = dict(api.account_options)
    rpm = config.provider(provider).rpm
    if rpm is not None:
        settings["rpm"] = rpm
    return settings


def serve(host: str, port: int, config: SandboxConfig | None = None) -> None:
    """Serve the sandbox in the foreground until interrupted (``genq sandbox``, ``python -m sandbox``)."""
    _Server(host, port, config or SandboxConfig.from_env()).run()
