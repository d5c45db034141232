"""The qtpixel seed's code examples, copied into ``examples/qtpixel/``, run for real against the sandbox
with only the host and the placeholder key changed.

The seed prints each snippet on one line; the copies put back the line breaks the snippets need to
run (a ``\\`` ending a curl line, Python's statements), and change nothing else.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import sandbox.qtpixel  # noqa: F401  (registers the provider before any server starts)
from sandbox.server import SandboxServer

EXAMPLES = Path(__file__).parent / "examples" / "qtpixel"
HOST = "https://pixel.qingchencloud.com"
PLACEHOLDER_KEY = "YOUR_API_KEY"
KEY = "gpa_example_key"
SNIPPETS = ["01_generate.sh", "02_generate.py", "03_generate.mjs"]


def run_example(sandbox: SandboxServer, name: str, key: str = KEY) -> dict[str, Any]:
    """Run one snippet from a temporary copy pointed at the sandbox; what it printed, as a dict."""
    source = (EXAMPLES / name).read_text()
    assert HOST in source and PLACEHOLDER_KEY in source
    script = source.replace(HOST, sandbox.base_url("qtpixel")).replace(PLACEHOLDER_KEY, key)
    command = {
        ".sh": ["bash", "-"],
        ".py": [sys.executable, "-"],
        ".mjs": ["node", "--input-type=module", "-"],
    }[Path(name).suffix]
    result = subprocess.run(command, input=script, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return printed(name, result.stdout.strip())


def printed(name: str, output: str) -> dict[str, Any]:
    """curl prints the JSON, Python the dict's repr, node ``console.log``'s object notation."""
    if name.endswith(".sh"):
        return json.loads(output)
    if name.endswith(".py"):
        return ast.literal_eval(output)
    # { task_id: 1, status: 'pending' }: quote the keys and the strings, and it is JSON.
    quoted = re.sub(r"([{,]\s*)(\w+):", r'\1"\2":', output.replace("'", '"'))
    return json.loads(quoted)


def task_of(sandbox: SandboxServer, task_id: int) -> dict[str, Any]:
    with httpx.Client(base_url=sandbox.base_url("qtpixel"), headers={"Authorization": f"Bearer {KEY}"}) as client:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            task = client.get(f"/api/v1/task/{task_id}").json()
            if task["status"] not in ("pending", "processing"):
                return task
            time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


@pytest.mark.parametrize("name", SNIPPETS)
def test_each_example_starts_a_task_with_the_documented_answer(sandbox: SandboxServer, name: str):
    answer = run_example(sandbox, name)

    assert answer == {"task_id": answer["task_id"], "status": "pending"}
    task = task_of(sandbox, answer["task_id"])
    assert (task["prompt"], task["status"]) == ("一只可爱的猫", "completed")
    assert httpx.get(sandbox.base_url("qtpixel") + task["image_path"]).status_code == 200


def test_the_same_example_again_finds_the_earlier_work_and_starts_nothing(sandbox: SandboxServer):
    first = run_example(sandbox, "01_generate.sh")

    again = run_example(sandbox, "02_generate.py")  # the seed's examples send no force: the cache answers

    assert again["status"] == "duplicates_found" and "task_id" not in again
    assert [work["id"] for work in again["duplicates"]] == [first["task_id"]]


@pytest.mark.parametrize("name", SNIPPETS)
def test_each_example_shows_the_error_body_for_a_wrong_key(sandbox: SandboxServer, name: str):
    answer = run_example(sandbox, name, key="invalid-example-key")

    assert answer == {"error": "未授权 - API Key 无效", "details": "invalid API key"}
