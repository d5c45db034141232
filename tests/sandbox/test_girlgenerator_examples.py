"""The girlgenerator seed's code examples, copied into ``examples/girlgenerator/``, run for real against
the sandbox with only the host and the placeholder key changed (and, to show a refused task, the
polling example's prompt).

The seed prints its snippets with the indentation and blank lines lost; the copies put them back (the
polling loop cannot run without them) and change nothing else. The polling example sleeps 5 s between
polls, but with the sandbox's zero latency its first poll already finds the task done.
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

import sandbox.girlgenerator  # noqa: F401  (registers the provider before any server starts)
from sandbox.server import SandboxServer

EXAMPLES = Path(__file__).parent / "examples" / "girlgenerator"
HOST = "https://girlgenerator.app"
PLACEHOLDER_KEY = "YOUR_API_KEY"
KEY = "gg-example-key"
GENERATE_SNIPPETS = ["01_generate.sh", "02_generate.py", "03_generate.mjs"]


def run(sandbox: SandboxServer, name: str, key: str = KEY, prompt: str | None = None) -> subprocess.CompletedProcess:
    """Run one snippet from a temporary copy pointed at the sandbox (its prompt changed, if asked)."""
    source = (EXAMPLES / name).read_text()
    assert HOST in source and PLACEHOLDER_KEY in source
    script = source.replace(HOST, sandbox.base_url("girlgenerator")).replace(PLACEHOLDER_KEY, key)
    if prompt is not None:
        assert '"a cute anime girl"' in script
        script = script.replace('"a cute anime girl"', json.dumps(prompt))
    command = {
        ".sh": ["bash", "-"],
        ".py": [sys.executable, "-"],
        ".mjs": ["node", "--input-type=module", "-"],
    }[Path(name).suffix]
    return subprocess.run(command, input=script, capture_output=True, text=True, timeout=60, check=False)


def run_example(sandbox: SandboxServer, name: str, **changes: str) -> str:
    """What a snippet printed, once it ran without error."""
    result = run(sandbox, name, **changes)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def task_of(sandbox: SandboxServer, task_id: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.get(f"{sandbox.base_url('girlgenerator')}/api/v1/tasks/{task_id}", headers=headers)


def test_the_curl_example_answers_201_pending_with_its_credits(sandbox: SandboxServer):
    body = json.loads(run_example(sandbox, "01_generate.sh"))

    assert body == {"task_id": body["task_id"], "status": "pending", "credits_used": 1, "credits_remaining": 12762}


@pytest.mark.parametrize("name", GENERATE_SNIPPETS)
def test_each_generate_example_starts_a_task_that_succeeds(sandbox: SandboxServer, name: str):
    printed = run_example(sandbox, name)
    task_id = json.loads(printed)["task_id"] if name.endswith(".sh") else printed

    answer = task_of(sandbox, task_id)

    assert answer.status_code == 200
    assert answer.json() == {"task_id": task_id, "status": "success", "images": answer.json()["images"]}
    assert sandbox.stats()["by_kind"] == {"submit": 1, "poll": 1}


def test_the_polling_example_prints_the_images_of_the_finished_task(sandbox: SandboxServer):
    printed = run_example(sandbox, "04_poll.py")

    assert printed.startswith("Images: ")
    [url] = ast.literal_eval(printed.removeprefix("Images: "))
    picture = httpx.get(url)
    assert picture.status_code == 200
    assert Image.open(io.BytesIO(picture.content)).size == (128, 128)  # auto is square, 128 px here
    assert sandbox.stats()["by_kind"]["poll"] == 1


def test_the_polling_example_prints_the_error_of_a_refused_task(sandbox: SandboxServer):
    printed = run_example(sandbox, "04_poll.py", prompt="a cute anime girl sandbox:unsafe")

    assert printed == "Error: Generation failed due to content policy."


def test_the_curl_example_shows_the_error_body_for_a_wrong_key(sandbox: SandboxServer):
    printed = run_example(sandbox, "01_generate.sh", key="invalid-example-key")

    assert json.loads(printed) == {"error": {"code": "unauthorized", "message": "Invalid API key"}}


def test_the_other_generate_examples_find_no_task_id_in_the_error_body(sandbox: SandboxServer):
    python = run(sandbox, "02_generate.py", key="invalid-example-key")
    node = run_example(sandbox, "03_generate.mjs", key="invalid-example-key")

    assert python.returncode != 0 and "KeyError: 'task_id'" in python.stderr
    assert node == "undefined"
    assert [r["status"] for r in sandbox.stats()["requests"]] == [401, 401]
