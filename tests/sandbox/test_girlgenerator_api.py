"""The sandbox's girlgenerator, as a client sees it over HTTP: the seed's two calls, their validation,
tasks that take time, credits by scene, errors in the seed's shape, and the 10-a-minute limit that
counts polls too.

Each test sends fewer than ten requests a key, so it holds under the provider's own limit as well."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

import sandbox.girlgenerator  # noqa: F401  (registers the provider before any server starts)
from sandbox.girlgenerator import GENERATION_FAILED
from sandbox.server import SandboxServer

KEY = "gg-test-alice-0001"
OTHER_KEY = "gg-test-bob-0002"
SEED_BODY = {
    "scene": "text-to-image",
    "prompt": "a cute anime girl with blue hair, detailed portrait",
    "aspect_ratio": "1:1",
}
"""The body of the seed's generate examples."""
REFERENCE = "https://example.com/reference.png"


def client_for(server: SandboxServer, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=server.base_url("girlgenerator"), headers=headers, timeout=10.0)


@pytest.fixture(scope="module")
def girlgenerator(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with client_for(sandbox, KEY) as client:
        yield client


def generate(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/api/v1/generate", json={"scene": "text-to-image", "prompt": "a girl reading", **body})


def submit(client: httpx.Client, **body: Any) -> str:
    response = generate(client, **body)
    assert response.status_code == 201, response.text
    return response.json()["task_id"]


def task(client: httpx.Client, task_id: str) -> httpx.Response:
    return client.get(f"/api/v1/tasks/{task_id}")


def size_of(client: httpx.Client, url: str) -> tuple[int, int]:
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    return image.size


def refusal(response: httpx.Response) -> tuple[int, str]:
    """The status and error code of a refusal, after checking the body has the seed's shape."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return response.status_code, body["error"]["code"]


# The seed's calls


def test_the_seed_example_is_created_pending_with_its_credits(girlgenerator: httpx.Client):
    response = girlgenerator.post("/api/v1/generate", json=SEED_BODY)

    assert response.status_code == 201
    body = response.json()
    assert body == {"task_id": body["task_id"], "status": "pending", "credits_used": 1, "credits_remaining": 12762}
    assert isinstance(body["task_id"], str) and body["task_id"]


def test_the_task_ends_in_success_with_a_square_picture(girlgenerator: httpx.Client):
    task_id = girlgenerator.post("/api/v1/generate", json=SEED_BODY).json()["task_id"]

    body = task(girlgenerator, task_id).json()

    assert body == {"task_id": task_id, "status": "success", "images": body["images"]}
    [url] = body["images"]
    assert size_of(girlgenerator, url) == (128, 128)


@pytest.mark.parametrize(
    ("aspect", "size"),
    [(None, (128, 128)), ("auto", (128, 128)), ("16:9", (128, 72)), ("2:3", (85, 128)), ("3:4", (96, 128))],
)
def test_each_aspect_ratio_draws_its_shape(girlgenerator: httpx.Client, aspect: str | None, size: tuple[int, int]):
    task_id = submit(girlgenerator, **({} if aspect is None else {"aspect_ratio": aspect}))

    [url] = task(girlgenerator, task_id).json()["images"]

    assert size_of(girlgenerator, url) == size


def test_image_to_image_costs_more_by_its_references(girlgenerator: httpx.Client):
    one = generate(girlgenerator, scene="image-to-image", image_input=[REFERENCE]).json()
    two = generate(girlgenerator, scene="image-to-image", image_input=[REFERENCE, REFERENCE]).json()

    assert (one["credits_used"], one["credits_remaining"]) == (2, 12761)
    assert (two["credits_used"], two["credits_remaining"]) == (3, 12758)
    assert task(girlgenerator, two["task_id"]).json()["status"] == "success"


def test_a_prompt_of_exactly_2000_characters_is_taken(girlgenerator: httpx.Client):
    assert generate(girlgenerator, prompt="x" * 2000).status_code == 201


# Tasks over time


def test_a_slow_task_shows_only_its_id_and_status(sandbox: SandboxServer, girlgenerator: httpx.Client):
    sandbox.configure("girlgenerator", latency_mean=30.0)
    task_id = submit(girlgenerator)

    body = task(girlgenerator, task_id).json()

    assert body in ({"task_id": task_id, "status": "pending"}, {"task_id": task_id, "status": "processing"})


def test_the_fail_trigger_ends_the_task_failed_with_an_error(girlgenerator: httpx.Client):
    task_id = submit(girlgenerator, prompt="a storm sandbox:fail")

    assert task(girlgenerator, task_id).json() == {"task_id": task_id, "status": "failed", "error": GENERATION_FAILED}


def test_unsafe_content_ends_the_task_failed_by_content_policy(girlgenerator: httpx.Client):
    task_id = submit(girlgenerator, prompt="something sandbox:unsafe")

    body = task(girlgenerator, task_id).json()

    # The seed's own failed example.
    assert body == {"task_id": task_id, "status": "failed", "error": "Generation failed due to content policy."}


# Refusals


@pytest.mark.parametrize(
    "body",
    [
        {"scene": None},
        {"scene": "sketch-to-image"},
        {"prompt": None},
        {"prompt": "   "},
        {"prompt": "x" * 2001},
        {"aspect_ratio": "5:4"},
        {"aspect_ratio": "21:9"},
        {"scene": "image-to-image"},
        {"scene": "image-to-image", "image_input": []},
        {"scene": "image-to-image", "image_input": "https://example.com/a.png"},
        {"scene": "image-to-image", "image_input": ["not a url"]},
    ],
)
def test_a_bad_body_is_invalid_params(girlgenerator: httpx.Client, body: dict[str, Any]):
    """``body`` changes a good one; a field set to None is left out."""
    sent = {name: value for name, value in {**SEED_BODY, **body}.items() if value is not None}

    response = girlgenerator.post("/api/v1/generate", json=sent)

    assert refusal(response) == (422, "invalid_params")


def test_a_body_that_is_not_json_is_invalid_params(girlgenerator: httpx.Client):
    response = girlgenerator.post("/api/v1/generate", content="prompt=a girl")

    assert refusal(response) == (422, "invalid_params")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "gg-no-scheme"}, {"Authorization": "Basic abc"}])
def test_a_request_without_a_bearer_key_is_unauthorized(sandbox: SandboxServer, headers: dict[str, str]):
    with client_for(sandbox, None) as anonymous:
        response = anonymous.post("/api/v1/generate", json=SEED_BODY, headers=headers)

    assert refusal(response) == (401, "unauthorized")


def test_an_invalid_key_is_unauthorized(sandbox: SandboxServer):
    with client_for(sandbox, "invalid-gg-key") as client:
        assert refusal(generate(client)) == (401, "unauthorized")


def test_another_keys_task_and_an_unknown_task_are_not_found(sandbox: SandboxServer, girlgenerator: httpx.Client):
    task_id = submit(girlgenerator)
    with client_for(sandbox, OTHER_KEY) as other:
        theirs = task(other, task_id)

    assert refusal(theirs) == (404, "task_not_found")
    assert refusal(task(girlgenerator, "abc123")) == (404, "task_not_found")


def test_the_upstream_error_trigger_answers_an_internal_error(girlgenerator: httpx.Client):
    assert refusal(generate(girlgenerator, prompt="a cat sandbox:upstream_error")) == (500, "internal_error")


def test_the_balance_runs_out_by_each_scenes_cost(sandbox: SandboxServer, girlgenerator: httpx.Client):
    sandbox.configure("girlgenerator", credits=2)

    first = generate(girlgenerator).json()
    too_dear = generate(girlgenerator, scene="image-to-image", image_input=[REFERENCE])
    last = generate(girlgenerator).json()
    empty = generate(girlgenerator)

    assert (first["credits_remaining"], last["credits_remaining"]) == (1, 0)
    assert refusal(too_dear) == refusal(empty) == (403, "insufficient_credits")


def test_ten_requests_a_minute_polls_included_then_429(sandbox: SandboxServer, girlgenerator: httpx.Client):
    sandbox.configure("girlgenerator", rpm=10)
    task_id = submit(girlgenerator)
    polls = [task(girlgenerator, task_id).status_code for _ in range(9)]

    response = task(girlgenerator, task_id)

    assert polls == [200] * 9
    assert refusal(response) == (429, "rate_limit_exceeded")
    assert 0 < int(response.headers["retry-after"]) <= 60
    with client_for(sandbox, OTHER_KEY) as other:
        assert generate(other).status_code == 201  # the limit is per key


def test_every_request_is_recorded_by_kind(sandbox: SandboxServer, girlgenerator: httpx.Client):
    task_id = submit(girlgenerator)
    [url] = task(girlgenerator, task_id).json()["images"]
    size_of(girlgenerator, url)

    by_kind = sandbox.stats()["by_kind"]

    assert (by_kind["submit"], by_kind["poll"], by_kind["download"]) == (1, 1, 1)
