"""The sandbox's qtpixel, as a client sees it over HTTP: the seed's request bodies and answers, sprite
batches and their ZIP, signed links, listings, duplicates, its errors, and the record of what was sent."""

from __future__ import annotations

import base64
import io
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

import sandbox.qtpixel  # noqa: F401  (registers the provider before any server starts)
from sandbox.qtpixel import REFUSAL, sign
from sandbox.server import SandboxServer

KEY = "gpa_test_alice_0001"
OTHER_KEY = "gpa_test_bob_0002"
SEED_GENERATE = {
    "prompt": "一只可爱的猫",
    "background": "transparent",
    "force": False,
    "scale": 20,
    "email": "user@example.com",
    "send_email": True,
}
"""The seed's ``POST /api/v1/generate`` body, its comments left out."""
SEED_BATCH = {
    "prompt": "一只可爱的猫",
    "mode": "walk",
    "count": 4,
    "background": "transparent",
    "variations": True,
    "scale": 20,
    "send_email": False,
}
"""The seed's ``POST /api/v1/batch-generate`` body, its comments left out."""
TASK_KEYS = {"id", "prompt", "status", "image_path", "error_msg", "batch_id", "created_at", "updated_at"}


def client_for(sandbox: SandboxServer, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=sandbox.base_url("qtpixel"), headers=headers, timeout=10.0)


@pytest.fixture(scope="module")
def qtpixel(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with client_for(sandbox, KEY) as client:
        yield client


@pytest.fixture(scope="module")
def qtpixel_other(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with client_for(sandbox, OTHER_KEY) as client:
        yield client


def generate(client: httpx.Client, prompt: str = "a pixel-art treasure chest", **body: Any) -> int:
    response = client.post("/api/v1/generate", json={"prompt": prompt, **body})
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def batch(client: httpx.Client, mode: str = "walk", **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/batch-generate", json={"prompt": "a pixel-art knight", "mode": mode, **body})
    assert response.status_code == 200, response.text
    return response.json()


def finished_task(client: httpx.Client, task_id: int, **params: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        task = client.get(f"/api/v1/task/{task_id}", params=params).json()
        if task["status"] in ("completed", "failed"):
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


def png(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    assert image.format == "PNG"
    image.load()
    return image


def picture(client: httpx.Client, image_path: str) -> Image.Image:
    response = client.get(image_path, headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    return png(response.content)


# The seed's examples: bodies and answers


def test_the_seeds_generate_body_starts_a_pending_task(qtpixel: httpx.Client):
    response = qtpixel.post("/api/v1/generate", json=SEED_GENERATE)

    assert response.status_code == 200
    body = response.json()
    assert body == {"task_id": body["task_id"], "status": "pending"}
    assert isinstance(body["task_id"], int)


def test_a_finished_task_reads_as_the_seeds_example(qtpixel: httpx.Client):
    task_id = generate(qtpixel, "一只可爱的猫")

    task = finished_task(qtpixel, task_id)

    assert set(task) == TASK_KEYS
    assert task["id"] == task_id and task["prompt"] == "一只可爱的猫"
    assert (task["status"], task["image_path"], task["error_msg"], task["batch_id"]) == (
        "completed", f"/static/gallery/{task_id}.png", "", None,
    )  # fmt: skip
    assert task["created_at"].endswith("Z") and task["updated_at"] >= task["created_at"]


def test_the_image_path_is_relative_to_the_base_and_served_without_a_key(qtpixel: httpx.Client):
    task = finished_task(qtpixel, generate(qtpixel))

    image = picture(qtpixel, task["image_path"])

    assert image.size == (128, 128)  # square; the test sandbox draws 128 px on the long side


def test_pictures_are_pixel_art_blown_up_cell_by_cell(qtpixel: httpx.Client):
    image = picture(qtpixel, finished_task(qtpixel, generate(qtpixel))["image_path"]).convert("RGBA")

    cells = image.resize((32, 32), Image.Resampling.NEAREST)
    assert cells.resize(image.size, Image.Resampling.NEAREST).tobytes() == image.tobytes()
    assert len(cells.getcolors(32 * 32) or ()) > 1


@pytest.mark.parametrize(("background", "transparent"), [("transparent", True), ("white", False)])
def test_the_background_asked_for_is_transparent_or_opaque(qtpixel: httpx.Client, background: str, transparent: bool):
    image = picture(qtpixel, finished_task(qtpixel, generate(qtpixel, background=background))["image_path"])

    alphas = image.convert("RGBA").getchannel("A").getextrema()
    assert (alphas[0] == 0) is transparent


def test_include_base64_adds_the_picture_as_a_data_url(qtpixel: httpx.Client):
    task_id = generate(qtpixel)
    plain = finished_task(qtpixel, task_id)

    task = qtpixel.get(f"/api/v1/task/{task_id}", params={"include_base64": "true"}).json()

    header, _, data = task["image_base64"].partition(",")
    assert header == "data:image/png;base64"
    assert png(base64.b64decode(data)).tobytes() == picture(qtpixel, plain["image_path"]).tobytes()
    assert "image_base64" not in plain


def test_the_seeds_batch_body_starts_four_walk_frames(qtpixel: httpx.Client):
    response = qtpixel.post("/api/v1/batch-generate", json=SEED_BATCH)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"batch_id", "task_ids", "requested_count", "status"}
    assert (body["requested_count"], body["status"], len(body["task_ids"])) == (4, "pending", 4)
    assert all(isinstance(task_id, int) for task_id in [body["batch_id"], *body["task_ids"]])


def test_a_batch_reads_as_the_seeds_example(qtpixel: httpx.Client):
    started = batch(qtpixel, "walk")
    for task_id in started["task_ids"]:
        finished_task(qtpixel, task_id)

    body = qtpixel.get(f"/api/v1/batch/{started['batch_id']}").json()

    assert body["batch"] == {
        "id": started["batch_id"], "prompt": "a pixel-art knight", "mode": "walk", "status": "completed",
        "requested_count": 4, "generated_count": 4,
    }  # fmt: skip
    assert [(t["id"], t["batch_index"], t["status"], t["error_msg"]) for t in body["tasks"]] == [
        (task_id, index, "completed", "") for index, task_id in enumerate(started["task_ids"], start=1)
    ]
    assert [t["image_path"] for t in body["tasks"]] == [f"/static/gallery/{i}.png" for i in started["task_ids"]]
    assert (body["completed_count"], body["failed_count"], body["total_count"], body["base64_limited"]) == (
        4, 0, 4, False,
    )  # fmt: skip
    assert qtpixel.get(f"/api/v1/task/{started['task_ids'][0]}").json()["batch_id"] == started["batch_id"]


@pytest.mark.parametrize(
    ("body", "frames"),
    [
        ({"mode": "walk", "count": 1}, 4),
        ({"mode": "idle", "count": 4}, 2),
        ({"mode": "attack"}, 3),
        ({"mode": "directions", "count": 2}, 4),
        ({"mode": "variations", "count": 2}, 2),
        ({"mode": "random", "count": 3}, 3),
        ({}, 4),  # random, the default mode, and our default count
    ],
)
def test_sprite_modes_set_the_count_the_others_take_it(qtpixel: httpx.Client, body: dict[str, Any], frames: int):
    response = qtpixel.post("/api/v1/batch-generate", json={"prompt": "a slime", **body})

    assert response.status_code == 200, response.text
    assert (len(response.json()["task_ids"]), response.json()["requested_count"]) == (frames, frames)


def test_variations_without_a_mode_is_the_variations_mode(qtpixel: httpx.Client):
    started = batch(qtpixel, mode="variations", count=2)
    implied = qtpixel.post("/api/v1/batch-generate", json={"prompt": "a slime", "variations": True, "count": 2})

    batch_id = implied.json()["batch_id"]
    assert qtpixel.get(f"/api/v1/batch/{batch_id}").json()["batch"]["mode"] == "variations"
    assert batch_id == started["batch_id"] + 1


def test_the_batch_download_is_a_zip_of_the_frames_named_by_mode(qtpixel: httpx.Client):
    started = batch(qtpixel, "attack")
    for task_id in started["task_ids"]:
        finished_task(qtpixel, task_id)

    response = qtpixel.get(f"/api/v1/batch/{started['batch_id']}/download")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == f"attachment; filename=batch_{started['batch_id']}_attack.zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.namelist() == ["attack_1.png", "attack_2.png", "attack_3.png"]
    frames = [png(archive.read(name)) for name in archive.namelist()]
    assert len({frame.tobytes() for frame in frames}) == 3


def test_the_zip_holds_only_the_finished_frames(qtpixel: httpx.Client):
    started = batch(qtpixel, "idle")
    for task_id in started["task_ids"]:
        finished_task(qtpixel, task_id)
    qtpixel.delete(f"/api/v1/task/{started['task_ids'][0]}")

    response = qtpixel.get(f"/api/v1/batch/{started['batch_id']}/download")

    assert zipfile.ZipFile(io.BytesIO(response.content)).namelist() == ["idle_2.png"]


# Signed download links


def test_a_signed_link_downloads_the_picture_without_a_key(qtpixel: httpx.Client):
    task = finished_task(qtpixel, generate(qtpixel))

    link = qtpixel.get(f"/api/v1/task/{task['id']}/download-url").json()

    assert link["expires_in"] == 3600
    response = httpx.get(link["download_url"])
    assert response.status_code == 200
    assert png(response.content).tobytes() == picture(qtpixel, task["image_path"]).tobytes()


def test_a_tampered_or_expired_link_is_refused(qtpixel: httpx.Client):
    task_id = finished_task(qtpixel, generate(qtpixel))["id"]
    url = httpx.URL(qtpixel.get(f"/api/v1/task/{task_id}/download-url").json()["download_url"])
    expires = int(url.params["exp"])
    past = int(time.time()) - 1

    tampered = httpx.get(url.copy_set_param("exp", str(expires + 3600)))
    expired = httpx.get(url.copy_merge_params({"exp": str(past), "sig": sign(task_id, past)}))

    assert (tampered.status_code, tampered.json()["details"]) == (403, "invalid download signature")
    assert (expired.status_code, expired.json()["details"]) == (403, "download link expired")


def test_a_task_still_running_has_no_download_link(qtpixel: httpx.Client, sandbox: SandboxServer):
    sandbox.configure("qtpixel", latency_mean=30.0)

    response = qtpixel.get(f"/api/v1/task/{generate(qtpixel)}/download-url")

    assert response.status_code == 400


# Listings and deletion


def test_the_task_list_filters_pages_and_counts(qtpixel: httpx.Client):
    done = [generate(qtpixel, f"a coin number {n}") for n in range(21)]
    failed = generate(qtpixel, "a coin sandbox:fail")
    finished_task(qtpixel, failed)

    first = qtpixel.get("/api/v1/tasks", params={"status": "completed"}).json()
    second = qtpixel.get("/api/v1/tasks", params={"status": "completed", "page": 2}).json()
    only_failed = qtpixel.get("/api/v1/tasks", params={"status": "failed"}).json()

    assert (first["total"], first["page"], first["page_size"], len(first["tasks"])) == (21, 1, 20, 20)
    assert [t["id"] for t in first["tasks"] + second["tasks"]] == done[::-1]
    assert [t["id"] for t in only_failed["tasks"]] == [failed]
    assert qtpixel.get("/api/v1/tasks").json()["total"] == 22


def test_the_task_list_puts_at_most_ten_pictures_inline(qtpixel: httpx.Client):
    for n in range(11):
        generate(qtpixel, f"a gem number {n}")

    listed = qtpixel.get("/api/v1/tasks", params={"include_base64": "true"}).json()

    assert sum(1 for t in listed["tasks"] if "image_base64" in t) == 10
    assert listed["base64_limited"] is True
    assert qtpixel.get("/api/v1/tasks").json()["base64_limited"] is False


def test_the_batch_list_shows_the_keys_batches_newest_first(qtpixel: httpx.Client, qtpixel_other: httpx.Client):
    walk, idle = batch(qtpixel, "walk"), batch(qtpixel, "idle")
    batch(qtpixel_other, "attack")

    listed = qtpixel.get("/api/v1/batches").json()

    assert [(b["id"], b["mode"]) for b in listed["batches"]] == [(idle["batch_id"], "idle"), (walk["batch_id"], "walk")]
    assert (listed["total"], listed["page"]) == (2, 1)


def test_a_deleted_task_and_its_picture_are_gone(qtpixel: httpx.Client):
    task = finished_task(qtpixel, generate(qtpixel))

    deleted = qtpixel.delete(f"/api/v1/task/{task['id']}")

    assert deleted.status_code == 200
    assert qtpixel.get(f"/api/v1/task/{task['id']}").status_code == 404
    assert qtpixel.get(task["image_path"]).status_code == 404
    assert qtpixel.delete(f"/api/v1/task/{task['id']}").status_code == 404


# Duplicates


def test_a_similar_earlier_prompt_without_force_starts_nothing(qtpixel: httpx.Client, sandbox: SandboxServer):
    sandbox.configure("qtpixel", credits=2)
    first = finished_task(qtpixel, generate(qtpixel, "一只可爱的猫"))

    again = qtpixel.post("/api/v1/generate", json={"prompt": "  一只可爱的猫 ", "force": False}).json()

    assert again["status"] == "duplicates_found" and "task_id" not in again
    assert [d["id"] for d in again["duplicates"]] == [first["id"]]
    assert qtpixel.get("/api/v1/tasks").json()["total"] == 1
    # The duplicate answer cost nothing: the second credit still pays for a forced task.
    assert qtpixel.post("/api/v1/generate", json={"prompt": "一只可爱的猫", "force": True}).status_code == 200


def test_force_starts_a_new_task_and_other_keys_are_not_duplicates(qtpixel, qtpixel_other):
    first = generate(qtpixel, "一只可爱的猫")

    forced = generate(qtpixel, "一只可爱的猫", force=True)
    other = generate(qtpixel_other, "一只可爱的猫")

    assert len({first, forced, other}) == 3


# Progress, failures, refusals


def test_a_task_is_pending_then_processing_then_completed(qtpixel: httpx.Client, sandbox: SandboxServer):
    sandbox.configure("qtpixel", latency_mean=1.0)
    task_id = generate(qtpixel)

    seen: list[str] = []
    while not seen or seen[-1] != "completed":
        status = qtpixel.get(f"/api/v1/task/{task_id}").json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.02)

    assert seen == ["pending", "processing", "completed"]


def test_a_failed_task_says_why_and_has_no_picture(qtpixel: httpx.Client):
    task = finished_task(qtpixel, generate(qtpixel, "a storm sandbox:fail"))

    assert task["status"] == "failed" and task["error_msg"] and task["error_msg"] != REFUSAL
    assert task["image_path"] is None


def test_unsafe_content_fails_with_the_seeds_refusal(qtpixel: httpx.Client):
    task = finished_task(qtpixel, generate(qtpixel, "something sandbox:unsafe"))

    assert (task["status"], task["error_msg"]) == ("failed", "⚠️ 生成失败: AI 拒绝处理此请求 (可能包含敏感内容)")
    assert qtpixel.get(f"/static/gallery/{task['id']}.png").status_code == 404


def test_a_failing_batch_counts_its_failed_frames(qtpixel: httpx.Client):
    started = batch(qtpixel, "idle", prompt="a storm sandbox:fail")
    for task_id in started["task_ids"]:
        finished_task(qtpixel, task_id)

    body = qtpixel.get(f"/api/v1/batch/{started['batch_id']}").json()

    assert (body["batch"]["status"], body["failed_count"], body["completed_count"]) == ("failed", 2, 0)
    assert qtpixel.get(f"/api/v1/batch/{started['batch_id']}/download").status_code == 404


# Errors, in the seed's shape


def test_no_key_and_a_wrong_key_are_401(sandbox: SandboxServer):
    with client_for(sandbox, None) as anonymous, client_for(sandbox, "invalid-key") as wrong:
        missing = anonymous.post("/api/v1/generate", json={"prompt": "a cat"})
        invalid = wrong.post("/api/v1/generate", json={"prompt": "a cat"})

    assert (missing.status_code, missing.json()["error"]) == (401, "未授权 - API Key 无效")
    assert invalid.json() == {"error": "未授权 - API Key 无效", "details": "invalid API key"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/generate", {"prompt": "   "}),
        ("/api/v1/generate", {}),
        ("/api/v1/generate", {"prompt": "a cat", "background": "black"}),
        ("/api/v1/generate", {"prompt": "a cat", "scale": -5}),
        ("/api/v1/generate", {"prompt": "a cat", "force": "yes"}),
        ("/api/v1/batch-generate", {"prompt": "a cat", "mode": "run"}),
        ("/api/v1/batch-generate", {"prompt": "a cat", "mode": "random", "count": 5}),
        ("/api/v1/batch-generate", {"prompt": "a cat", "count": 0}),
    ],
)
def test_a_bad_request_is_400_and_starts_nothing(qtpixel: httpx.Client, path: str, body: dict[str, Any]):
    response = qtpixel.post(path, json=body)

    assert response.status_code == 400
    assert response.json()["error"] == "请求错误 - 参数无效" and response.json()["details"]
    assert qtpixel.get("/api/v1/tasks").json()["total"] == 0


def test_a_body_that_is_not_json_is_400(qtpixel: httpx.Client):
    response = qtpixel.post("/api/v1/generate", content=b"prompt=a cat")

    assert response.status_code == 400


def test_another_keys_task_and_batch_are_not_found(qtpixel: httpx.Client, qtpixel_other: httpx.Client):
    task_id, batch_id = generate(qtpixel), batch(qtpixel)["batch_id"]

    for path in (f"/api/v1/task/{task_id}", f"/api/v1/batch/{batch_id}", "/api/v1/task/99999", "/api/v1/task/abc"):
        response = qtpixel_other.get(path)
        assert (response.status_code, response.json()["error"]) == (404, "未找到 - 资源不存在")
    assert qtpixel_other.delete(f"/api/v1/task/{task_id}").status_code == 404


def test_an_upstream_error_is_500(qtpixel: httpx.Client):
    response = qtpixel.post("/api/v1/generate", json={"prompt": "a cat sandbox:upstream_error"})

    assert (response.status_code, response.json()["error"]) == (500, "服务器错误 - 内部错误")


def test_each_frame_costs_a_credit_and_an_empty_balance_is_403(qtpixel: httpx.Client, sandbox: SandboxServer):
    sandbox.configure("qtpixel", credits=3)

    too_many = qtpixel.post("/api/v1/batch-generate", json={"prompt": "a knight", "mode": "walk"})
    idle = qtpixel.post("/api/v1/batch-generate", json={"prompt": "a knight", "mode": "idle"})
    single = qtpixel.post("/api/v1/generate", json={"prompt": "a squire"})
    broke = qtpixel.post("/api/v1/generate", json={"prompt": "a page"})

    assert (too_many.status_code, idle.status_code, single.status_code) == (403, 200, 200)
    assert broke.json() == {"error": "禁止访问 - 无权限", "details": "insufficient credits"}


def test_past_the_rate_limit_is_429_with_the_wait(qtpixel: httpx.Client, sandbox: SandboxServer):
    sandbox.configure("qtpixel", rpm=2)
    generate(qtpixel)
    qtpixel.get("/api/v1/tasks")

    response = qtpixel.get("/api/v1/tasks")

    assert response.status_code == 429
    assert 0 < int(response.headers["retry-after"]) <= 60
    assert response.json()["error"] == "请求过于频繁"


def test_every_request_is_recorded_by_kind(qtpixel: httpx.Client, sandbox: SandboxServer):
    task_id = generate(qtpixel)
    started = batch(qtpixel, "idle")
    finished_task(qtpixel, task_id)
    link = qtpixel.get(f"/api/v1/task/{task_id}/download-url").json()["download_url"]
    httpx.get(link)
    qtpixel.get(f"/api/v1/batch/{started['batch_id']}")
    qtpixel.get("/api/v1/batches")
    qtpixel.delete(f"/api/v1/task/{task_id}")

    kinds = [(r["kind"], r["status"]) for r in sandbox.stats()["requests"]]

    assert kinds == [
        ("submit", 200), ("submit", 200), ("poll", 200), ("download", 200), ("download", 200),
        ("poll_many", 200), ("history", 200), ("status", 200),
    ]  # fmt: skip
