"""The sandbox's cloudsway, as a client sees it over HTTP: the seed's two calls, their validation,
tasks that take time, the pictures of the aspect table, errors, and the record of what was sent."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

import sandbox.cloudsway  # noqa: F401  (registers the provider before any server starts)
from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer

KEY = "RW-test-alice-0001"
OTHER_KEY = "RW-test-bob-0002"
ENDPOINT = "lXynAhfbAiD"
SEED_BODY = {
    "prompts": "A fruit basket containing dragon fruit, mango, guava, apple, and banana.",
    "aspect_ratio": "2:3",
    "batchsize": "2",
    "step": 10,
}
"""The body of the seed's curl example, ``batchsize`` a string as it sends it."""


def client_for(server: SandboxServer, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=f"{server.base_url('cloudsway')}/v2/ai", headers=headers, timeout=10.0)


@pytest.fixture(scope="module")
def cloudsway(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with client_for(sandbox, KEY) as client:
        yield client


def generate(client: httpx.Client, endpoint: str = ENDPOINT, **body: Any) -> httpx.Response:
    return client.post(f"/{endpoint}/images/generations", json={"prompts": "a fruit basket", **body})


def submit(client: httpx.Client, **body: Any) -> str:
    response = generate(client, **body)
    assert response.status_code == 200, response.text
    return response.json()["taskId"]


def task(client: httpx.Client, task_id: str, endpoint: str = ENDPOINT) -> httpx.Response:
    return client.get(f"/{endpoint}/images/tasks/{task_id}")


def until_done(client: httpx.Client, task_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = task(client, task_id).json()
        if body["status"] in ("completed", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} still running after {timeout} s")


def sizes(client: httpx.Client, urls: list[str]) -> list[tuple[int, int]]:
    found = []
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "PNG"
        found.append(image.size)
    return found


# The seed's calls


def test_the_seed_example_starts_one_task_that_ends_with_both_pictures(cloudsway: httpx.Client):
    response = cloudsway.post(f"/{ENDPOINT}/images/generations", json=SEED_BODY)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "taskId"} and body["status"] == "success"
    uuid.UUID(body["taskId"])
    done = task(cloudsway, body["taskId"]).json()
    assert (done["status"], done["completed"]) == ("completed", True)
    assert sizes(cloudsway, done["imageUrls"]) == [(85, 128), (85, 128)]


def test_batchsize_as_a_number_makes_that_many_pictures(cloudsway: httpx.Client):
    done = until_done(cloudsway, submit(cloudsway, batchsize=8))

    assert len(done["imageUrls"]) == len(set(done["imageUrls"])) == 8


def test_defaults_make_one_square_picture(cloudsway: httpx.Client):
    done = until_done(cloudsway, submit(cloudsway))

    assert sizes(cloudsway, done["imageUrls"]) == [(128, 128)]


def test_without_a_size_override_every_aspect_has_the_size_of_the_seed_table():
    with SandboxServer(SandboxConfig()) as full, client_for(full, KEY) as client:
        for aspect, size in {
            "1:1": (1024, 1024), "2:3": (512, 768), "3:2": (768, 512), "3:4": (768, 1024),
            "4:3": (1024, 768), "16:9": (1280, 720), "9:16": (720, 1280),
        }.items():  # fmt: skip
            done = until_done(client, submit(client, aspect_ratio=aspect))
            assert sizes(client, done["imageUrls"]) == [size], aspect


def test_any_endpoint_path_is_served_and_a_task_is_found_from_any_of_them(cloudsway: httpx.Client):
    # The seed itself polls at lXynAhfbOiD for a task started at lXynAhfbAiD.
    task_id = submit(cloudsway, endpoint="someOtherPath1")

    assert task(cloudsway, task_id, endpoint="lXynAhfbOiD").json()["status"] == "completed"


def test_blanks_around_a_task_id_are_ignored(cloudsway: httpx.Client):
    task_id = submit(cloudsway)

    assert task(cloudsway, f"{task_id}%20").json()["status"] == "completed"


# Tasks over time


def test_a_slow_task_reads_not_completed_until_it_is_done(sandbox: SandboxServer, cloudsway: httpx.Client):
    sandbox.configure("cloudsway", latency_mean=0.5)
    task_id = submit(cloudsway)

    early = task(cloudsway, task_id).json()

    assert early["completed"] is False and early["status"] in ("pending", "running")
    assert set(early) == {"status", "completed"}
    done = until_done(cloudsway, task_id)
    assert done["completed"] is True and len(done["imageUrls"]) == 1


def test_a_picture_cannot_be_fetched_before_its_task_is_done(sandbox: SandboxServer, cloudsway: httpx.Client):
    fast = submit(cloudsway)
    url = until_done(cloudsway, fast)["imageUrls"][0]
    sandbox.configure("cloudsway", latency_mean=30.0)
    slow = submit(cloudsway)

    assert cloudsway.get(url).status_code == 200
    assert cloudsway.get(url.replace(fast, slow)).status_code == 404


def test_the_fail_trigger_ends_the_task_failed(cloudsway: httpx.Client):
    done = until_done(cloudsway, submit(cloudsway, prompts="a storm sandbox:fail", batchsize=3))

    assert done == {"status": "failed", "completed": True, "imageUrls": [], "error": "model overloaded"}


# Refusals


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompts": ""}, "prompts"),
        ({"prompts": None, "prompt": "the singular is not the field"}, "prompts"),
        ({"batchsize": 0}, "batchsize"),
        ({"batchsize": "9"}, "batchsize"),
        ({"batchsize": "two"}, "batchsize"),
        ({"step": 3}, "step"),
        ({"step": 11}, "step"),
        ({"seed": 1.5}, "seed"),
        ({"aspect_ratio": "21:9"}, "aspect_ratio"),
    ],
)
def test_a_bad_body_is_an_invalid_parameter(cloudsway: httpx.Client, body: dict[str, Any], field: str):
    """``body`` changes a good one; a field set to None is left out."""
    sent = {name: value for name, value in {"prompts": "a basket", **body}.items() if value is not None}

    response = cloudsway.post(f"/{ENDPOINT}/images/generations", json=sent)

    assert response.status_code == 400
    refusal = response.json()
    assert (refusal["status"], refusal["code"]) == ("error", "invalid_parameter")
    assert refusal["message"].startswith(field)


def test_a_body_that_is_not_json_is_an_invalid_parameter(cloudsway: httpx.Client):
    response = cloudsway.post(f"/{ENDPOINT}/images/generations", content="prompts=a basket")

    assert response.status_code == 400 and response.json()["code"] == "invalid_parameter"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "RW-no-scheme"}, {"Authorization": "Basic abc"}])
def test_a_request_without_a_bearer_key_is_unauthorized(sandbox: SandboxServer, headers: dict[str, str]):
    with client_for(sandbox, None) as anonymous:
        response = anonymous.post(f"/{ENDPOINT}/images/generations", json={"prompts": "x"}, headers=headers)

    assert response.status_code == 401 and response.json()["code"] == "unauthorized"


def test_an_invalid_key_is_refused(sandbox: SandboxServer):
    with client_for(sandbox, "invalid-RW-key") as client:
        response = generate(client)

    assert response.status_code == 401
    assert response.json() == {"status": "error", "code": "invalid_access_key", "message": "Invalid AccessKey"}


def test_another_keys_task_and_an_unknown_task_are_not_found(sandbox: SandboxServer, cloudsway: httpx.Client):
    task_id = submit(cloudsway)
    with client_for(sandbox, OTHER_KEY) as other:
        response = task(other, task_id)

    assert response.status_code == 404 and response.json()["code"] == "task_not_found"
    assert task(cloudsway, str(uuid.uuid4())).status_code == 404


def test_the_upstream_error_trigger_answers_a_server_error(cloudsway: httpx.Client):
    response = generate(cloudsway, prompts="a cat sandbox:upstream_error")

    assert response.status_code == 500 and response.json()["code"] == "internal_error"


def test_each_picture_costs_a_credit(sandbox: SandboxServer, cloudsway: httpx.Client):
    sandbox.configure("cloudsway", credits=3)

    refused = generate(cloudsway, batchsize=4)
    assert submit(cloudsway, batchsize=3)
    after = generate(cloudsway)

    assert refused.status_code == after.status_code == 402
    assert after.json()["code"] == "insufficient_quota"


def test_past_the_rate_limit_is_a_429_naming_the_wait(sandbox: SandboxServer, cloudsway: httpx.Client):
    sandbox.configure("cloudsway", rpm=2)
    task_id = submit(cloudsway)
    task(cloudsway, task_id)

    response = task(cloudsway, task_id)

    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert 0 < int(response.headers["retry-after"]) <= 60


def test_every_request_is_recorded_by_kind(sandbox: SandboxServer, cloudsway: httpx.Client):
    done = until_done(cloudsway, submit(cloudsway, batchsize=2))
    sizes(cloudsway, done["imageUrls"])

    by_kind = sandbox.stats()["by_kind"]

    assert (by_kind["submit"], by_kind["download"]) == (1, 2) and by_kind["poll"] >= 1
