"""The sandbox's gencraft, as a client sees it over HTTP: the seed document's examples, its errors,
tasks that take time, accounts kept apart, the record of what was sent, and the rate limit."""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer

KEY = "sk-test-alice-0001"
OTHER_KEY = "sk-test-bob-0002"
SEED_GENERATE = {
    "prompt": "A serene Japanese garden in autumn",
    "model": "flash",
    "mode": "text",
    "aspect": "16:9",
    "imageSize": "2K",
    "count": 1,
}
"""The body of the seed's curl example for ``POST /api/v1/generate``."""
TASK_KEYS = {"task_id", "status", "progress"}


def client_for(sandbox: SandboxServer, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=sandbox.base_url("gencraft"), headers=headers, timeout=10.0)


@pytest.fixture(scope="module")
def gencraft(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    """A client of the sandbox's gencraft, holding ``KEY``."""
    with client_for(sandbox, KEY) as client:
        yield client


@pytest.fixture(scope="module")
def gencraft_other(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    """A client of the sandbox's gencraft, holding another account's key."""
    with client_for(sandbox, OTHER_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    """A client of the sandbox's gencraft that sends no key."""
    with client_for(sandbox, None) as client:
        yield client


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def submit(client: httpx.Client, **body: object) -> list[str]:
    response = client.post("/api/v1/generate", json={"prompt": "a lighthouse at dusk", **body})
    assert response.status_code == 200, response.text
    return response.json()["task_ids"]


def picture(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


# The seed's examples, with only the host changed


def test_the_generate_example_starts_one_task_and_names_the_account(gencraft: httpx.Client):
    response = gencraft.post("/api/v1/generate", json=SEED_GENERATE)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"task_ids", "email"}
    assert len(body["task_ids"]) == 1
    assert re.fullmatch(r"task_[0-9a-f]+", body["task_ids"][0])
    assert body["email"].endswith("@example.com")


def test_the_get_task_example_answers_completed_with_an_image_url(gencraft: httpx.Client):
    [task_id] = submit(gencraft, **SEED_GENERATE)

    response = gencraft.get(f"/api/v1/tasks/{task_id}")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == TASK_KEYS | {"imageUrl"}
    assert (body["task_id"], body["status"], body["progress"]) == (task_id, "completed", 100)
    assert body["imageUrl"].startswith("http://127.0.0.1:")


def test_the_batch_example_answers_every_id_in_the_order_asked(gencraft: httpx.Client):
    response = gencraft.get("/api/v1/tasks?ids=task_abc,task_def,task_ghi")

    assert response.status_code == 200
    tasks = response.json()["tasks"]
    assert [t["task_id"] for t in tasks] == ["task_abc", "task_def", "task_ghi"]
    # None of the example's ids exist here: each keeps its place as a failed entry.
    assert tasks[0] == {"task_id": "task_abc", "status": "failed", "progress": 0, "error": "task not found"}


def test_the_upload_example_stores_the_picture_and_serves_it_back(sandbox: SandboxServer, gencraft: httpx.Client):
    source_url = f"{sandbox.url}/_sandbox/samples/cat.png"
    original = gencraft.get(source_url).content

    response = gencraft.post("/api/v1/upload", json={"source_url": source_url})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"url", "filename", "content_type", "bytes"}
    assert (body["filename"], body["content_type"], body["bytes"]) == ("cat.png", "image/png", len(original))
    assert gencraft.get(body["url"]).content == original


@pytest.mark.parametrize(("name", "content_type"), [("ref.jpg", "image/jpeg"), ("ref.webp", "image/webp"),
                                                     ("ref.gif", "image/gif"), ("ref.bmp", "image/bmp")])  # fmt: skip
def test_every_documented_picture_type_can_be_uploaded(
    sandbox: SandboxServer, gencraft: httpx.Client, name: str, content_type: str
):
    response = gencraft.post("/api/v1/upload", json={"source_url": f"{sandbox.url}/_sandbox/samples/{name}"})

    assert response.status_code == 200
    assert response.json()["content_type"] == content_type


def test_the_history_example_lists_submissions_newest_first(gencraft: httpx.Client):
    submit(gencraft, prompt="first", aspect="1:1")
    submit(gencraft, **SEED_GENERATE)

    response = gencraft.get("/api/v1/history?page=1&limit=20")

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("total", "page", "limit", "total_pages")} == {
        "total": 2, "page": 1, "limit": 20, "total_pages": 1
    }  # fmt: skip
    newest, oldest = body["items"]
    assert set(newest) == {
        "id", "prompt", "model", "mode", "aspect", "imageSize", "imageCount", "images", "refs", "createdAt"
    }  # fmt: skip
    assert (newest["prompt"], newest["model"], newest["aspect"], newest["imageCount"]) == (
        "A serene Japanese garden in autumn", "flash", "16:9", 1
    )  # fmt: skip
    assert len(newest["images"]) == 1 and newest["refs"] == []
    assert oldest["prompt"] == "first"
    assert newest["createdAt"] >= oldest["createdAt"] > 1_700_000_000_000


def test_history_pages_by_limit(gencraft: httpx.Client):
    for n in range(5):
        submit(gencraft, prompt=f"picture {n}")

    body = gencraft.get("/api/v1/history", params={"page": 3, "limit": 2}).json()

    assert [i["prompt"] for i in body["items"]] == ["picture 0"]
    assert (body["total"], body["total_pages"]) == (5, 3)


def test_the_user_status_example(gencraft: httpx.Client):
    response = gencraft.get("/api/v1/user/status")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"email", "tier", "has_key"}
    assert (body["tier"], body["has_key"]) == ("pro", True)
    assert body["email"] == gencraft.post("/api/v1/generate", json=SEED_GENERATE).json()["email"]


# The documented errors, with their bodies


def error(kind: str, message: str) -> dict[str, object]:
    return {"error": {"type": kind, "message": message}}


UNAUTHORIZED = error("unauthorized", "Missing or malformed Authorization header: expected 'Bearer <key>'")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic c2s6dGVzdA=="}, {"Authorization": "Bearer"},
                                     {"Authorization": "sk-test-alice-0001"}])  # fmt: skip
def test_a_request_without_a_bearer_key_is_unauthorized(anonymous: httpx.Client, headers: dict[str, str]):
    response = anonymous.post("/api/v1/generate", json=SEED_GENERATE, headers=headers)

    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_an_unknown_key_is_an_invalid_api_key(sandbox: SandboxServer):
    with client_for(sandbox, "invalid-key-123") as client:
        response = client.get("/api/v1/tasks?ids=task_abc")

    assert response.status_code == 401
    assert response.json() == error("invalid_api_key", "Invalid API key")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": ""}, "prompt is required"),
        ({"prompt": "   "}, "prompt is required"),
        ({"model": "flash"}, "prompt is required"),
        ({"prompt": "a cat", "model": "dall-e-9"}, "Unknown model: dall-e-9"),
        ({"prompt": "a cat", "mode": "fusion"}, "Model gpt-image-2 does not support mode fusion"),
        ({"prompt": "a cat", "model": "pro", "mode": "fusion", "imageUrls": ["http://127.0.0.1/a.png"]},
         "Model pro does not support mode fusion"),
        ({"prompt": "a cat", "mode": "sketch"}, "Unknown mode: sketch; expected one of text, edit, fusion"),
        ({"prompt": "a cat", "aspect": "5:4"},
         "Unsupported aspect: 5:4; expected one of 1:1, 2:3, 3:2, 3:4, 4:3, 9:16, 16:9, 21:9"),
        ({"prompt": "a cat", "imageSize": "8K"}, "Unsupported imageSize: 8K; expected one of 1K, 2K, 4K"),
        ({"prompt": "a cat", "count": 5}, "count must be an integer from 1 to 4 for model gpt-image-2"),
        ({"prompt": "a cat", "count": 0}, "count must be an integer from 1 to 4 for model gpt-image-2"),
        ({"prompt": "a cat", "count": "2"}, "count must be an integer from 1 to 4 for model gpt-image-2"),
        ({"prompt": "a cat", "mode": "edit"}, "mode edit needs a picture in imageUrls"),
    ],
)  # fmt: skip
def test_a_bad_generate_body_is_an_invalid_request(gencraft: httpx.Client, body: dict[str, object], message: str):
    response = gencraft.post("/api/v1/generate", json=body)

    assert response.status_code == 400
    assert response.json() == error("invalid_request", message)


@pytest.mark.parametrize("content", ["prompt=a cat", "", "[1, 2]", "{not json"])
def test_a_body_that_is_not_a_json_object_is_an_invalid_request(gencraft: httpx.Client, content: str):
    response = gencraft.post("/api/v1/generate", content=content, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json() == error("invalid_request", "Body must be a JSON object")


def test_more_than_twenty_ids_is_an_invalid_request(gencraft: httpx.Client):
    ids = ",".join(f"task_{n:04x}" for n in range(21))

    response = gencraft.get("/api/v1/tasks", params={"ids": ids})

    assert response.status_code == 400
    assert response.json() == error("invalid_request", "At most 20 ids per request, got 21")


@pytest.mark.parametrize("query", ["", "?ids=", "?ids=,,"])
def test_a_batch_poll_without_ids_is_an_invalid_request(gencraft: httpx.Client, query: str):
    response = gencraft.get(f"/api/v1/tasks{query}")

    assert response.status_code == 400
    assert response.json() == error("invalid_request", "ids is required: a comma-separated list of task ids")


@pytest.mark.parametrize(
    ("query", "message"),
    [("limit=51", "limit must be at most 50"), ("limit=0", "limit must be a positive integer"),
     ("page=0", "page must be a positive integer"), ("page=two", "page must be a positive integer")],
)  # fmt: skip
def test_a_bad_history_page_is_an_invalid_request(gencraft: httpx.Client, query: str, message: str):
    response = gencraft.get(f"/api/v1/history?{query}")

    assert response.status_code == 400
    assert response.json() == error("invalid_request", message)


def test_the_upstream_error_trigger_answers_a_server_error_and_starts_nothing(gencraft: httpx.Client):
    response = gencraft.post("/api/v1/generate", json={"prompt": "a cat sandbox:upstream_error"})

    assert response.status_code == 500
    assert response.json() == error("upstream_error", "Upstream image service failed: 503 Service Unavailable")
    assert gencraft.get("/api/v1/history").json()["total"] == 0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("https://example.com/cat.png",
         "source_url must be on a loopback host in the sandbox (it has no network)"),
        ("ftp://127.0.0.1/cat.png", "source_url must be an http or https URL"),
        ("{sandbox}/_sandbox/config", "source_url is not a picture"),
        ("{sandbox}/_sandbox/samples/cat.txt", "source_url answered HTTP 404"),
    ],
)  # fmt: skip
def test_an_upload_that_is_not_a_loopback_picture_is_an_invalid_request(
    sandbox: SandboxServer, gencraft: httpx.Client, source: str, message: str
):
    response = gencraft.post("/api/v1/upload", json={"source_url": source.format(sandbox=sandbox.url)})

    assert response.status_code == 400
    assert response.json() == error("invalid_request", message)


def test_an_upload_over_25_mb_is_an_invalid_request(sandbox: SandboxServer, gencraft: httpx.Client):
    source = f"{sandbox.url}/_sandbox/samples/huge.bmp?width=3000&height=3000"  # 27,000,054 bytes

    response = gencraft.post("/api/v1/upload", json={"source_url": source})

    assert response.status_code == 400
    assert response.json() == error("invalid_request", "source_url is larger than 26214400 bytes")


# Tasks over time, and the pictures they make


def test_a_slow_task_goes_from_queued_through_in_progress_to_a_picture_of_its_aspect(
    sandbox: SandboxServer, gencraft: httpx.Client
):
    sandbox.configure("gencraft", latency_mean=0.5)
    [task_id] = submit(gencraft, aspect="3:4")

    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["status"] not in ("completed", "failed"):
        seen.append(gencraft.get(f"/api/v1/tasks/{task_id}").json())
        time.sleep(0.05)

    statuses = [s["status"] for s in seen]
    assert statuses[-1] == "completed" and len(statuses) > 1
    order = ["queued", "in_progress", "completed"]
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
    assert [s["progress"] for s in seen] == sorted(s["progress"] for s in seen)
    assert "imageUrl" not in seen[0]
    image = picture(gencraft, seen[-1]["imageUrl"])
    assert image.format == "PNG"
    assert (image.width, image.height) == (96, 128)


@pytest.mark.parametrize(("aspect", "size"), [("1:1", (128, 128)), ("16:9", (128, 72)), ("9:16", (72, 128)),
                                              ("21:9", (128, 55)), ("2:3", (85, 128))])  # fmt: skip
def test_pictures_keep_the_requested_aspect(gencraft: httpx.Client, aspect: str, size: tuple[int, int]):
    [task_id] = submit(gencraft, aspect=aspect)

    image = picture(gencraft, gencraft.get(f"/api/v1/tasks/{task_id}").json()["imageUrl"])

    assert image.size == size


def test_without_a_size_override_pictures_have_the_documented_size():
    with SandboxServer(SandboxConfig()) as sandbox, client_for(sandbox, KEY) as client:
        [task_id] = submit(client, aspect="16:9", imageSize="1K")

        image = picture(client, client.get(f"/api/v1/tasks/{task_id}").json()["imageUrl"])

    assert image.size == (1024, 576)


def test_the_fail_trigger_ends_every_task_of_the_submit_failed(gencraft: httpx.Client):
    task_ids = submit(gencraft, prompt="a storm sandbox:fail", count=2)

    tasks = gencraft.get("/api/v1/tasks", params={"ids": ",".join(task_ids)}).json()["tasks"]

    assert [(t["status"], t["error"]) for t in tasks] == [("failed", "model overloaded")] * 2
    assert all("imageUrl" not in t for t in tasks)


def test_a_failure_rate_of_one_fails_every_task(sandbox: SandboxServer, gencraft: httpx.Client):
    sandbox.configure("gencraft", failure_rate=1.0)
    [task_id] = submit(gencraft)

    assert gencraft.get(f"/api/v1/tasks/{task_id}").json()["status"] == "failed"


def test_count_three_starts_three_tasks_and_a_batch_poll_answers_in_the_order_asked(gencraft: httpx.Client):
    task_ids = submit(gencraft, count=3)
    assert len(set(task_ids)) == 3

    asked = [task_ids[2], "task_missing", task_ids[0], task_ids[1]]
    tasks = gencraft.get("/api/v1/tasks", params={"ids": ",".join(asked)}).json()["tasks"]

    assert [t["task_id"] for t in tasks] == asked
    assert [t["status"] for t in tasks] == ["completed", "failed", "completed", "completed"]
    assert len({t["imageUrl"] for t in tasks if "imageUrl" in t}) == 3


def test_another_key_cannot_see_my_task(gencraft: httpx.Client, gencraft_other: httpx.Client):
    [task_id] = submit(gencraft)

    response = gencraft_other.get(f"/api/v1/tasks/{task_id}")
    batch = gencraft_other.get("/api/v1/tasks", params={"ids": task_id}).json()["tasks"]

    assert response.status_code == 404
    assert response.json() == error("not_found", "Task not found")
    assert batch == [{"task_id": task_id, "status": "failed", "progress": 0, "error": "task not found"}]
    assert gencraft_other.get("/api/v1/history").json()["total"] == 0


def test_an_edit_records_its_reference_pictures(sandbox: SandboxServer, gencraft: httpx.Client):
    reference = gencraft.post("/api/v1/upload", json={"source_url": f"{sandbox.url}/_sandbox/samples/shoe.png"})
    url = reference.json()["url"]

    submit(gencraft, mode="edit", imageUrls=[url])

    assert gencraft.get("/api/v1/history").json()["items"][0]["refs"] == [url]


# What the sandbox saw


def test_stats_count_requests_by_key_and_kind_and_never_show_a_key(
    control: httpx.Client, gencraft: httpx.Client, gencraft_other: httpx.Client
):
    [task_id] = submit(gencraft, **SEED_GENERATE)
    submit(gencraft, **SEED_GENERATE)
    gencraft.get(f"/api/v1/tasks/{task_id}")
    gencraft.get("/api/v1/tasks", params={"ids": task_id})
    submit(gencraft_other, **SEED_GENERATE)
    gencraft_other.get("/api/v1/user/status")

    response = control.get("/stats")

    stats = response.json()
    assert stats["by_key"] == {
        key_id(KEY): {"submit": 2, "poll": 1, "poll_many": 1},
        key_id(OTHER_KEY): {"submit": 1, "status": 1},
    }
    assert len(stats["requests"]) == 6
    first = stats["requests"][0]
    assert (first["key_id"], first["provider"], first["kind"], first["status"]) == (
        key_id(KEY), "gencraft", "submit", 200
    )  # fmt: skip
    assert first["t"] == pytest.approx(time.time(), abs=60)
    assert stats["repeated_submissions"]["count"] == 1
    [repeat] = stats["repeated_submissions"]["items"]
    assert (repeat["key_id"], repeat["prompt"], repeat["times"]) == (key_id(KEY), SEED_GENERATE["prompt"], 2)
    assert stats["rate_limited"] == 0
    assert KEY not in response.text and OTHER_KEY not in response.text


def test_a_submit_differing_in_any_parameter_is_not_a_repeat(sandbox: SandboxServer, gencraft: httpx.Client):
    submit(gencraft, **SEED_GENERATE)
    submit(gencraft, **{**SEED_GENERATE, "aspect": "1:1"})
    submit(gencraft, **{**SEED_GENERATE, "count": 2})

    assert sandbox.stats()["repeated_submissions"]["count"] == 0


def test_downloads_and_refusals_are_recorded_too(
    sandbox: SandboxServer, gencraft: httpx.Client, anonymous: httpx.Client
):
    [task_id] = submit(gencraft)
    picture(gencraft, gencraft.get(f"/api/v1/tasks/{task_id}").json()["imageUrl"])
    anonymous.get("/api/v1/user/status")

    requests = sandbox.stats()["requests"]

    assert [(r["kind"], r["status"], r["key_id"]) for r in requests] == [
        ("submit", 200, key_id(KEY)), ("poll", 200, key_id(KEY)), ("download", 200, None), ("status", 401, None)
    ]  # fmt: skip


def test_reset_forgets_tasks_and_the_record(sandbox: SandboxServer, control: httpx.Client, gencraft: httpx.Client):
    [task_id] = submit(gencraft)

    control.post("/reset").raise_for_status()

    assert gencraft.get(f"/api/v1/tasks/{task_id}").status_code == 404
    assert [r["kind"] for r in sandbox.stats()["requests"]] == ["poll"]


# Limits set at run time


def test_past_the_rpm_a_key_gets_429_with_retry_after(
    sandbox: SandboxServer, control: httpx.Client, gencraft: httpx.Client, gencraft_other: httpx.Client
):
    response = control.put("/config/gencraft", json={"rpm": 3})
    assert response.status_code == 200 and response.json()["rpm"] == 3

    answers = [gencraft.get("/api/v1/user/status") for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
    assert answers[3].json()["error"]["type"] == "rate_limited"
    assert gencraft_other.get("/api/v1/user/status").status_code == 200
    assert sandbox.stats()["rate_limited"] == 1


def test_a_key_out_of_credits_is_refused(sandbox: SandboxServer, gencraft: httpx.Client):
    sandbox.configure("gencraft", credits=3)
    submit(gencraft, count=2)

    response = gencraft.post("/api/v1/generate", json={"prompt": "one more", "count": 2})

    assert response.status_code == 402
    assert response.json() == error("insufficient_credits", "Insufficient credits")
    submit(gencraft, count=1)


def test_a_submit_whose_answer_hangs_still_starts_its_task(sandbox: SandboxServer, gencraft: httpx.Client):
    sandbox.configure("gencraft", timeout_rate=1.0, hang_seconds=5)

    with pytest.raises(httpx.ReadTimeout):
        gencraft.post("/api/v1/generate", json={"prompt": "lost answer"}, timeout=0.2)

    sandbox.configure("gencraft", timeout_rate=0.0)
    [item] = gencraft.get("/api/v1/history").json()["items"]
    assert item["prompt"] == "lost answer"


def test_a_bad_config_change_is_refused(control: httpx.Client):
    bad_value = control.put("/config/gencraft", json={"failure_rate": 2})
    unknown_field = control.put("/config/gencraft", json={"speed": 2})
    unknown_provider = control.put("/config/dalle", json={"rpm": 2})

    assert (bad_value.status_code, unknown_field.status_code, unknown_provider.status_code) == (400, 400, 404)
    assert control.get("/config").json()["providers"] == {}
