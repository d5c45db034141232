"""The talecraft seed's code examples, copied verbatim into ``examples/talecraft/``, run for real
against the sandbox with only the host and the placeholder key changed."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image

import sandbox.talecraft  # noqa: F401  (registers the provider before any server starts)
from sandbox.server import SandboxServer

EXAMPLES = Path(__file__).parent / "examples" / "talecraft"
HOST = "https://talescaleai.com"
PLACEHOLDER_KEY = "YOUR_API_KEY"
KEY = "tc-example-key"
RUNNERS = {".sh": ["bash"], ".mjs": ["node"], ".py": [sys.executable]}


def run_example(sandbox: SandboxServer, name: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    """Run one snippet from a temporary copy pointed at the sandbox."""
    source = (EXAMPLES / name).read_text()
    assert HOST in source and PLACEHOLDER_KEY in source
    script = source.replace(HOST, sandbox.base_url("talecraft")).replace(PLACEHOLDER_KEY, key)
    suffix = Path(name).suffix
    command = [*RUNNERS[suffix], "-"] if suffix != ".mjs" else ["node", "--input-type=module", "-"]
    return subprocess.run(command, input=script, capture_output=True, text=True, timeout=60)


def assert_is_the_picture(url: str) -> None:
    response = httpx.get(url)
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == ("JPEG", (128, 72))  # 16:9, as the examples ask


def test_the_curl_example_answers_the_documented_success(sandbox: SandboxServer):
    result = run_example(sandbox, "01_generate.sh")

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["code"], body["message"], body["data"]["status"]) == (0, "ok", "success")
    uuid.UUID(body["data"]["id"])
    assert_is_the_picture(body["data"]["image_url"])


@pytest.mark.parametrize("name", ["02_generate.mjs", "03_generate.py"])
def test_the_javascript_and_python_examples_print_the_image_url(sandbox: SandboxServer, name: str):
    result = run_example(sandbox, name)

    assert result.returncode == 0, result.stderr
    assert_is_the_picture(result.stdout.strip())


@pytest.mark.parametrize("name", ["02_generate.mjs", "03_generate.py"])
def test_the_javascript_and_python_examples_raise_the_error_message(sandbox: SandboxServer, name: str):
    result = run_example(sandbox, name, key="invalid-example-key")

    assert result.returncode != 0
    assert "Invalid API key" in result.stderr


def test_the_curl_example_shows_the_error_body(sandbox: SandboxServer):
    result = run_example(sandbox, "01_generate.sh", key="invalid-example-key")

    assert result.returncode == 0  # curl without --fail succeeds whatever the status
    assert json.loads(result.stdout) == {"code": -1, "message": "Invalid API key"}
