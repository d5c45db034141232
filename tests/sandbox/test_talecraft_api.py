"""The sandbox's talecraft, as a client sees it over HTTP: one call that answers with the picture,
the seed's error messages in ``{"code": -1, "message": M}``, credits, the record and the rate limit."""

from __future__ import annotations

import hashlib
import io
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

import sandbox.talecraft  # noqa: F401  (registers the provider before any server starts)
from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer

KEY = "tc-test-alice-0001"
SEED_GENERATE = {"prompt": "A brave knight in an enchanted forest", "style": "children_book", "aspect_ratio": "16:9"}
"""The body of the seed's examples."""


def client_for(sandbox: SandboxServer, key: str | None) -> httpx.Client:
    headers = {"X-API-Key": key} if key is not None else {}
    return httpx.Client(base_url=sandbox.base_url("talecraft"), headers=headers, timeout=10.0)


@pytest.fixture(scope="module")
def talecraft(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with client_for(sandbox, KEY) as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with client_for(sandbox, None) as client:
        yield client


def generate(client: httpx.Client, **body: object) -> dict:
    response = client.post("/api/v1/generate", json={"prompt": "a fox reading under a tree", **body})
    assert response.status_code == 200, response.text
    return response.json()


def picture(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def error(message: str) -> dict[str, object]:
    return {"code": -1, "message": message}


# The seed's example, with only the host changed


def test_the_generate_example_answers_with_a_finished_picture(talecraft: httpx.Client):
    response = talecraft.post("/api/v1/generate", json=SEED_GENERATE)

    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["message"]) == (0, "ok")
    assert set(body["data"]) == {"id", "status", "image_url"}
    assert body["data"]["status"] == "success"
    assert str(uuid.UUID(body["data"]["id"])) == body["data"]["id"]
    image = picture(talecraft, body["data"]["image_url"])
    assert (image.format, image.size) == ("JPEG", (128, 72))


def test_style_and_aspect_ratio_default_to_a_square_childrens_book_picture(talecraft: httpx.Client):
    body = generate(talecraft)

    assert picture(talecraft, body["data"]["image_url"]).size == (128, 128)


@pytest.mark.parametrize(("aspect", "size"), [("2:3", (85, 128)), ("3:2", (128, 85)), ("3:4", (96, 128)),
                                              ("4:3", (128, 96)), ("9:16", (72, 128))])  # fmt: skip
def test_pictures_keep_the_requested_aspect_ratio(talecraft: httpx.Client, aspect: str, size: tuple[int, int]):
    body = generate(talecraft, aspect_ratio=aspect)

    assert picture(talecraft, body["data"]["image_url"]).size == size


def test_without_a_size_override_pictures_are_1024_on_the_long_side():
    with SandboxServer(SandboxConfig()) as server, client_for(server, KEY) as client:
        body = generate(client, aspect_ratio="16:9")

        assert picture(client, body["data"]["image_url"]).size == (1024, 576)


def test_every_call_makes_a_new_picture(talecraft: httpx.Client):
    first, second = generate(talecraft), generate(talecraft)

    assert first["data"]["id"] != second["data"]["id"]
    assert first["data"]["image_url"] != second["data"]["image_url"]


# The documented errors


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": ""}, {"Authorization": "Bearer tc-test-alice-0001"}])
def test_a_request_without_x_api_key_is_told_the_key_is_required(anonymous: httpx.Client, headers: dict[str, str]):
    response = anonymous.post("/api/v1/generate", json=SEED_GENERATE, headers=headers)

    assert response.status_code == 401
    assert response.json() == error("API key is required. Pass it in the X-API-Key header")


def test_an_unknown_key_is_an_invalid_api_key(sandbox: SandboxServer):
    with client_for(sandbox, "invalid-key-123") as client:
        response = client.post("/api/v1/generate", json=SEED_GENERATE)

    assert response.status_code == 401
    assert response.json() == error("Invalid API key")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": ""}, "prompt is required"),
        ({"prompt": "   "}, "prompt is required"),
        ({"prompt": 42}, "prompt is required"),
        ({"style": "children_book"}, "prompt is required"),
        ({"prompt": "a fox", "style": "anime"}, "Unsupported style"),
        ({"prompt": "a fox", "style": None}, "Unsupported style"),
        ({"prompt": "a fox", "aspect_ratio": "5:4"}, "Unsupported aspect_ratio"),
        ({"prompt": "a fox", "aspect_ratio": "21:9"}, "Unsupported aspect_ratio"),
    ],
)
def test_a_bad_body_is_refused_with_the_seeds_message(talecraft: httpx.Client, body: dict[str, object], message: str):
    response = talecraft.post("/api/v1/generate", json=body)

    assert response.status_code == 400
    assert response.json() == error(message)


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]"])
def test_a_body_that_is_not_a_json_object_has_no_prompt(talecraft: httpx.Client, content: str):
    response = talecraft.post("/api/v1/generate", content=content, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json() == error("prompt is required")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_sent_without_the_json_content_type_is_not_read(talecraft: httpx.Client, content_type: str | None):
    headers = {"Content-Type": content_type} if content_type else {}

    response = talecraft.post("/api/v1/generate", content=b'{"prompt": "a fox"}', headers=headers)

    assert response.status_code == 400
    assert response.json() == error("prompt is required")


def test_a_json_content_type_with_a_charset_is_read(talecraft: httpx.Client):
    response = talecraft.post(
        "/api/v1/generate", content=b'{"prompt": "a fox"}', headers={"Content-Type": "application/json; charset=utf-8"}
    )

    assert response.status_code == 200


def test_the_fail_trigger_answers_generation_failed_and_is_not_billed(sandbox: SandboxServer, talecraft: httpx.Client):
    sandbox.configure("talecraft", credits=1)

    response = talecraft.post("/api/v1/generate", json={"prompt": "a storm sandbox:fail"})

    assert response.status_code == 500
    assert response.json() == error("Generation failed")
    generate(talecraft)


def test_a_failure_rate_of_one_fails_every_generation(sandbox: SandboxServer, talecraft: httpx.Client):
    sandbox.configure("talecraft", failure_rate=1.0)

    answers = [talecraft.post("/api/v1/generate", json={"prompt": f"fox {n}"}) for n in range(3)]

    assert [a.json() for a in answers] == [error("Generation failed")] * 3


def test_the_upstream_error_trigger_answers_a_server_error(talecraft: httpx.Client):
    response = talecraft.post("/api/v1/generate", json={"prompt": "a fox sandbox:upstream_error"})

    assert response.status_code == 500
    assert response.json() == error("Internal server error")


def test_a_key_out_of_credits_is_refused(sandbox: SandboxServer, talecraft: httpx.Client):
    sandbox.configure("talecraft", credits=2)
    generate(talecraft)
    generate(talecraft)

    response = talecraft.post("/api/v1/generate", json=SEED_GENERATE)

    assert response.status_code == 402
    assert response.json() == error("insufficient credits")


def test_an_unknown_picture_is_not_found(talecraft: httpx.Client):
    response = talecraft.get("/uploads/illustrations/no-such-picture.jpeg")

    assert response.status_code == 404
    assert response.json() == error("File not found")


# Time: the call holds its answer until the picture is done


def test_a_slow_generation_holds_its_answer_without_holding_up_other_requests(
    sandbox: SandboxServer, control: httpx.Client, talecraft: httpx.Client
):
    sandbox.configure("talecraft", latency_mean=5.0)
    outcome: list[BaseException] = []

    def slow_call() -> None:
        try:
            talecraft.post("/api/v1/generate", json=SEED_GENERATE, timeout=1.5)
        except httpx.ReadTimeout as timed_out:
            outcome.append(timed_out)

    caller = threading.Thread(target=slow_call)
    caller.start()
    answered_meanwhile = control.get("/config").status_code
    still_waiting = caller.is_alive()
    caller.join()

    assert (answered_meanwhile, still_waiting) == (200, True)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.ReadTimeout)


def test_a_call_whose_answer_is_held_back_was_still_paid_for(sandbox: SandboxServer, talecraft: httpx.Client):
    sandbox.configure("talecraft", credits=1, timeout_rate=1.0, hang_seconds=5)

    with pytest.raises(httpx.ReadTimeout):
        talecraft.post("/api/v1/generate", json=SEED_GENERATE, timeout=0.3)

    sandbox.configure("talecraft", timeout_rate=0.0)
    response = talecraft.post("/api/v1/generate", json=SEED_GENERATE)
    assert response.json() == error("insufficient credits")


# The record, and the rate limit


def test_calls_and_downloads_are_recorded_and_a_repeat_is_noticed(sandbox: SandboxServer, talecraft: httpx.Client):
    first = talecraft.post("/api/v1/generate", json=SEED_GENERATE).json()
    talecraft.post("/api/v1/generate", json=SEED_GENERATE)
    picture(talecraft, first["data"]["image_url"])

    stats = sandbox.stats()

    key_id = hashlib.sha256(KEY.encode()).hexdigest()[:8]
    assert [(r["kind"], r["status"], r["key_id"]) for r in stats["requests"]] == [
        ("submit", 200, key_id), ("submit", 200, key_id), ("download", 200, None)
    ]  # fmt: skip
    [repeat] = stats["repeated_submissions"]["items"]
    assert (repeat["provider"], repeat["prompt"], repeat["times"]) == ("talecraft", SEED_GENERATE["prompt"], 2)


def test_past_the_rpm_a_key_gets_429_with_retry_after(sandbox: SandboxServer, talecraft: httpx.Client):
    sandbox.configure("talecraft", rpm=2)

    answers = [talecraft.post("/api/v1/generate", json={"prompt": f"fox {n}"}) for n in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60
    assert answers[2].json()["code"] == -1
    assert sandbox.stats()["rate_limited"] == 1
