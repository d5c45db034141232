"""The cloudsway seed's two curl examples, copied verbatim into ``examples/cloudsway/``, run for real
against the sandbox with only the host, the placeholder key and the placeholder task id changed."""

from __future__ import annotations

import io
import json
import subprocess
import uuid
from pathlib import Path

import httpx
from PIL import Image

import sandbox.cloudsway  # noqa: F401  (registers the provider before any server starts)
from sandbox.server import SandboxServer

EXAMPLES = Path(__file__).parent / "examples" / "cloudsway"
HOST = "https://genaiapi.cloudsway.net"
PLACEHOLDER_KEY = "${AccessKey}"
PLACEHOLDER_TASK = "3374b3b0-d069-4831-a76b-ebab4df14457"
KEY = "RW-example-access-key"


def run_example(sandbox: SandboxServer, name: str, key: str = KEY, task_id: str | None = None) -> dict:
    """Run one snippet from a temporary copy pointed at the sandbox; its output, read as JSON."""
    script = (EXAMPLES / name).read_text()
    assert HOST in script and PLACEHOLDER_KEY in script
    script = script.replace(HOST, sandbox.base_url("cloudsway")).replace(PLACEHOLDER_KEY, key)
    if task_id is not None:
        assert PLACEHOLDER_TASK in script
        # The seed's URL ends in a blank inside its quotes, which curl refuses ("URL using bad/illegal
        # format", exit 3) before sending anything; the blank goes with the placeholder id.
        script = script.replace(f"{PLACEHOLDER_TASK} '", f"{task_id}'")
    result = subprocess.run(["bash", "-"], input=script, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_generate_example_answers_success_and_a_task_id(sandbox: SandboxServer):
    body = run_example(sandbox, "01_generate.sh")

    assert set(body) == {"status", "taskId"}
    assert body["status"] == "success"
    uuid.UUID(body["taskId"])


def test_the_task_example_answers_completed_with_both_pictures_of_the_batch(sandbox: SandboxServer):
    task_id = run_example(sandbox, "01_generate.sh")["taskId"]

    # The seed polls at another endpoint path (lXynAhfbOiD) than it submitted to (lXynAhfbAiD).
    body = run_example(sandbox, "02_task.sh", task_id=task_id)

    assert set(body) == {"status", "completed", "imageUrls"}
    assert (body["status"], body["completed"]) == ("completed", True)
    assert len(body["imageUrls"]) == 2  # "batchsize": "2"
    for url in body["imageUrls"]:
        response = httpx.get(url)
        assert response.status_code == 200
        image = Image.open(io.BytesIO(response.content))
        assert (image.format, image.size) == ("PNG", (85, 128))  # 2:3 (512x768) at 128 px on the long side


def test_the_generate_example_with_a_wrong_key_shows_the_error_body(sandbox: SandboxServer):
    body = run_example(sandbox, "01_generate.sh", key="invalid-example-key")

    assert body == {"status": "error", "code": "invalid_access_key", "message": "Invalid AccessKey"}
