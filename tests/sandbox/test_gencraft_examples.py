"""The gencraft seed's request examples, copied into ``examples/gencraft/``, run for real against the
sandbox with only the host and the placeholder key changed.

The seed's examples are all curl; they are copied line for line. Where one names a task that does
not exist here (``task_abc123``), a real task's id is put in its place; the upload example's source
(``https://example.com/cat.png``) is served by the sandbox's samples, since the sandbox fetches only
from loopback. The seed's MCP configuration is not a request, so it is not run.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

import sandbox.gencraft  # noqa: F401  (registers the provider before any server starts)
from sandbox.server import SandboxServer

EXAMPLES = Path(__file__).parent / "examples" / "gencraft"
HOST = "https://www.gencraft.cc"
PLACEHOLDER_KEY = "<your_api_key>"
KEY = "sk-example-key"
SNIPPETS = sorted(path.name for path in EXAMPLES.iterdir())
TASK_KEYS = {"task_id", "status", "progress"}


def run_example(
    sandbox: SandboxServer, name: str, key: str = KEY, replace: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run one snippet pointed at the sandbox, with ``replace`` applied too; the JSON it printed."""
    script = (EXAMPLES / name).read_text()
    assert HOST in script and PLACEHOLDER_KEY in script
    for old, new in {HOST: sandbox.base_url("gencraft"), PLACEHOLDER_KEY: key, **(replace or {})}.items():
        assert old in script
        script = script.replace(old, new)
    result = subprocess.run(["bash", "-"], input=script, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def client(sandbox: SandboxServer) -> httpx.Client:
    """The same account as the examples, for setting the scene and looking afterwards."""
    return httpx.Client(base_url=sandbox.base_url("gencraft"), headers={"Authorization": f"Bearer {KEY}"})


def submit(sandbox: SandboxServer, prompt: str) -> str:
    with client(sandbox) as gencraft:
        response = gencraft.post("/api/v1/generate", json={"prompt": prompt})
    response.raise_for_status()
    [task_id] = response.json()["task_ids"]
    return str(task_id)


def test_the_generate_example_starts_one_task(sandbox: SandboxServer):
    answer = run_example(sandbox, "01_generate.sh")

    assert set(answer) == {"task_ids", "email"} and len(answer["task_ids"]) == 1
    assert answer["task_ids"][0].startswith("task_") and answer["email"].endswith("@example.com")
    with client(sandbox) as gencraft:
        [item] = gencraft.get("/api/v1/history").json()["items"]
    assert (item["prompt"], item["model"], item["aspect"], item["imageSize"]) == (
        "A serene Japanese garden in autumn", "flash", "16:9", "2K"
    )  # fmt: skip


def test_the_task_example_answers_completed_with_an_image_url(sandbox: SandboxServer):
    task_id = submit(sandbox, "a lighthouse at dusk")

    answer = run_example(sandbox, "02_task.sh", replace={"task_abc123": task_id})

    assert set(answer) == TASK_KEYS | {"imageUrl"}
    assert (answer["task_id"], answer["status"], answer["progress"]) == (task_id, "completed", 100)
    picture = httpx.get(answer["imageUrl"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"


def test_the_batch_example_answers_completed_in_progress_and_failed_in_the_order_asked(sandbox: SandboxServer):
    done = submit(sandbox, "a calm lake")
    failed = submit(sandbox, "a storm sandbox:fail")
    sandbox.configure("gencraft", latency_mean=4.0)
    running = submit(sandbox, "a slow mountain")
    time.sleep(0.5)  # past the first tenth of its 4 s, when a task shows as queued rather than in progress

    answer = run_example(sandbox, "03_tasks.sh", replace={"task_abc,task_def,task_ghi": f"{done},{running},{failed}"})

    first, second, third = answer["tasks"]
    assert set(first) == TASK_KEYS | {"imageUrl"}
    assert (first["task_id"], first["status"], first["progress"]) == (done, "completed", 100)
    assert set(second) == TASK_KEYS
    assert (second["task_id"], second["status"]) == (running, "in_progress") and 0 < second["progress"] < 100
    assert third == {"task_id": failed, "status": "failed", "progress": 0, "error": "model overloaded"}


def test_the_upload_example_answers_a_stable_url_of_the_same_picture(sandbox: SandboxServer):
    samples = f"{sandbox.url}/_sandbox/samples"
    original = httpx.get(f"{samples}/cat.png").content

    answer = run_example(sandbox, "04_upload.sh", replace={"https://example.com": samples})

    assert set(answer) == {"url", "filename", "content_type", "bytes"}
    assert (answer["filename"], answer["content_type"], answer["bytes"]) == ("cat.png", "image/png", len(original))
    assert httpx.get(answer["url"]).content == original


def test_the_history_example_lists_the_generate_example(sandbox: SandboxServer):
    run_example(sandbox, "01_generate.sh")

    answer = run_example(sandbox, "05_history.sh")

    assert {k: answer[k] for k in ("total", "page", "limit", "total_pages")} == {
        "total": 1, "page": 1, "limit": 20, "total_pages": 1
    }  # fmt: skip
    [item] = answer["items"]
    assert set(item) == {
        "id", "prompt", "model", "mode", "aspect", "imageSize", "imageCount", "images", "refs", "createdAt"
    }  # fmt: skip
    assert (item["prompt"], item["model"], item["mode"], item["imageCount"], item["refs"]) == (
        "A serene Japanese garden in autumn", "flash", "text", 1, []
    )  # fmt: skip
    assert item["id"].startswith("tsk_img_") and len(item["images"]) == 1
    assert item["createdAt"] == pytest.approx(time.time() * 1000, abs=60_000)


def test_the_user_status_example(sandbox: SandboxServer):
    answer = run_example(sandbox, "06_user_status.sh")

    assert set(answer) == {"email", "tier", "has_key"}
    assert answer["email"].endswith("@example.com") and (answer["tier"], answer["has_key"]) == ("pro", True)


@pytest.mark.parametrize("name", SNIPPETS)
def test_each_example_with_an_unknown_key_gets_the_documented_error(sandbox: SandboxServer, name: str):
    answer = run_example(sandbox, name, key="invalid-example-key")

    assert answer == {"error": {"type": "invalid_api_key", "message": "Invalid API key"}}
