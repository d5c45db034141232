"""The arrows between the packages point one way: ``workers`` imports ``jobs``, and ``jobs`` never
imports ``workers`` at module level (``jobs.cli``, the top floor, may reach up to start or kick it);
``sandbox`` imports neither, since it stands for someone else's server and speaks only HTTP.

Each package is imported module by module in a fresh interpreter, so nothing a test or conftest
imported earlier hides a wrong arrow, and the first module that pulls in a forbidden package is named.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib, json, pkgutil, sys

package, forbidden, skipped = sys.argv[1], sys.argv[2].split(","), set(sys.argv[3:])
imported, pulled = [], {}
for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
    if info.name in skipped or info.name.endswith(".__main__"):
        continue
    importlib.import_module(info.name)
    imported.append(info.name)
    for name in forbidden:
        if name in sys.modules and name not in pulled:
            pulled[name] = info.name
print(json.dumps({"imported": imported, "pulled": pulled}))
"""


def imports(package: str, forbidden: list[str], skipped: list[str]) -> tuple[list[str], dict[str, str]]:
    """Import every module of ``package`` but ``skipped``: the modules imported, and the module that
    first brought in each ``forbidden`` package."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, package, ",".join(forbidden), *skipped],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    return found["imported"], found["pulled"]


@pytest.mark.parametrize(
    ("package", "forbidden", "skipped", "expected"),
    [
        ("jobs", ["workers"], ["jobs.cli"], ["jobs.inbox", "jobs.checks", "jobs.addresses", "jobs.offers.gencraft"]),
        ("sandbox", ["jobs", "workers"], [], ["sandbox.server", "sandbox.gencraft"]),
    ],
)
def test_no_module_imports_a_floor_above_it(
    package: str, forbidden: list[str], skipped: list[str], expected: list[str]
) -> None:
    imported, pulled = imports(package, forbidden, skipped)

    assert set(expected) <= set(imported)
    assert pulled == {}, f"imported at module level (forbidden package: first module to pull it in): {pulled}"
