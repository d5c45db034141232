"""genq as a new user gets it: a fresh virtual environment, `pip install .` and nothing else (no test
extras, no pytest), a PATH with no redis-server, redis-cli or psql, and every command working.

The source is copied the way the Dockerfile copies it, and installed with the Dockerfile's own
command, so the production image is checked by the same test without a Docker engine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_deployment import wait_for_no_processes

DOCKERFILE = ROOT / "Dockerfile"


def dockerfile_copies() -> list[str]:
    """The paths the Dockerfile copies into the image's build folder."""
    paths: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _destination = line.split()[1:]
            paths += sources
    return paths


def dockerfile_install() -> list[str]:
    [install] = re.findall(r"^RUN (pip install [^\\&\n]*)", DOCKERFILE.read_text(), flags=re.M)
    return install.split()


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with genq installed as the Dockerfile installs it; its bin folder."""
    base = tmp_path_factory.mktemp("plain")
    source = base / "src"
    source.mkdir()
    for path in dockerfile_copies():
        origin = ROOT / path
        if origin.is_dir():
            shutil.copytree(origin, source / path, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / path)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip, *arguments = dockerfile_install()
    assert pip == "pip" and arguments == ["install", "."], "the image must install genq without extras"
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *arguments[1:]],
        cwd=source, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv / "bin"


def test_the_install_holds_every_pinned_dependency_and_nothing_of_the_tests(plain_install: Path):
    python = str(plain_install / "python")
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    versions = {entry["name"].lower().replace("_", "-"): entry["version"] for entry in json.loads(listed.stdout)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)", requirement).groups()  # type: ignore[union-attr]
        assert versions.get(name.lower().replace("_", "-")) == version, requirement
    for requirement in project["optional-dependencies"]["test"]:
        name = re.split(r"[\[=<>]", requirement)[0].lower()
        assert name not in versions or name in _runtime_names(project), f"{name} came without the test extra"
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    imports = subprocess.run(
        [python, "-c", "import jobs.cli, workers.tasks, workers.app, sandbox.server, kombu.transport.redis"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert imports.returncode == 0, imports.stderr


def _runtime_names(project: dict) -> set[str]:
    return {re.split(r"[\[=<>]", requirement)[0].lower() for requirement in project["dependencies"]}


def bare_env(home: Path) -> dict[str, str]:
    """A PATH with nothing on it: no redis-server, redis-cli or psql to fall back on (genq is called
    by its full path, as a script the virtual environment made)."""
    empty = home / "empty-path"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), "HOME": str(home), "LANG": "C.UTF-8", "COLUMNS": "100"}


def run_bare(bin_dir: Path, *args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "genq"), *args], cwd=cwd, env=bare_env(cwd), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_run_with_the_sandbox_on_a_bare_machine(plain_install: Path, tmp_path: Path):
    for tool in ("redis-server", "redis-cli", "psql"):
        assert shutil.which(tool, path=bare_env(tmp_path)["PATH"]) is None
    shutil.copytree(ROOT / "batches" / "examples", tmp_path / "examples")

    result = run_bare(plain_install, "run", "examples/catalog.csv", "--sandbox", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list((tmp_path / "var" / "objects").rglob("*.png"))) >= 5
    assert wait_for_no_processes(tmp_path) == []


def test_up_submit_status_down_on_a_bare_machine(plain_install: Path, tmp_path: Path):
    shutil.copytree(ROOT / "batches" / "examples", tmp_path / "examples")
    up = run_bare(plain_install, "up", "--sandbox", cwd=tmp_path, timeout=90)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        submitted = run_bare(plain_install, "submit", "examples/qtpixel.yaml", cwd=tmp_path, timeout=60)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = run_bare(plain_install, "status", "--json", cwd=tmp_path, timeout=60)
            assert status.returncode == 0, status.stderr
            [batch] = json.loads(status.stdout)["batches"]
            if batch["state"] != "running":
                break
            time.sleep(0.5)
        assert batch["state"] == "succeeded", batch
    finally:
        down = run_bare(plain_install, "down", cwd=tmp_path, timeout=90)
    assert down.returncode == 0, down.stdout + down.stderr
    assert wait_for_no_processes(tmp_path) == []
