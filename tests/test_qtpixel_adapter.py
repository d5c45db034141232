"""The qtpixel adapter: what ``check`` refuses, sprite batches and single tasks against the sandbox over
real HTTP, and against ``httpx.MockTransport`` the answers the sandbox never gives."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator, Sequence

import httpx
import pytest
from PIL import Image

import sandbox.qtpixel  # noqa: F401  (registers the provider before any server starts)
from jobs.accounts import Account
from jobs.spec import JobSpec
from workers.providers.base import (
    AnswerLost,
    Finished,
    InvalidRequest,
    OutOfCredits,
    Started,
    StillRunning,
    TaskFailed,
    TaskStatus,
    Transient,
)
from workers.providers.qtpixel import Qtpixel

KEY = "gpa_adapter_key"


def account(base_url: str) -> Account:
    return Account(name="qt", provider="qtpixel", api_key_env="UNUSED", base_url=base_url, rpm=60, max_in_flight=4)


@pytest.fixture
def qtpixel(sandbox_server) -> Iterator[Qtpixel]:
    with httpx.Client(timeout=5) as client:
        yield Qtpixel(client, account(sandbox_server.base_url("qtpixel")), KEY)


@pytest.fixture
def direct(sandbox_server) -> Iterator[httpx.Client]:
    """A plain client of the sandbox's qtpixel with the adapter's key, to see what the adapter made."""
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=sandbox_server.base_url("qtpixel"), headers=headers, timeout=5) as client:
        yield client


def spec(prompt: str = "a pixel-art treasure chest", **fields) -> JobSpec:
    return JobSpec(prompt=prompt, provider="qtpixel", **fields)


def started(submitted: object) -> tuple[str, ...]:
    assert isinstance(submitted, Started)
    return submitted.task_ids


def poll_until_done(adapter: Qtpixel, task_ids: Sequence[str], timeout: float = 10) -> dict[str, TaskStatus]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = adapter.poll(task_ids)
        if not any(isinstance(s, StillRunning) for s in statuses.values()):
            return statuses
        time.sleep(0.05)
    raise AssertionError("tasks did not finish")


def kinds(sandbox_server) -> list[str]:
    return [r["kind"] for r in sandbox_server.stats()["requests"]]


# What check lets through, and what it refuses before anything is sent


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"background": "transparent"},
        {"background": "white", "count": 4},
        {"sprite": "walk"},
        {"sprite": "walk", "count": 4},
        {"sprite": "idle", "count": 2},
        {"sprite": "attack"},
        {"sprite": "directions", "count": 4},
        {"sprite": "variations", "count": 3},
        {"sprite": "random", "count": 1},
        {"options": {"scale": -5}},
    ],
)
def test_check_takes_what_qtpixel_can_do(fields: dict):
    assert Qtpixel.check(spec(**fields)) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"sprite": "run"}, "sprite"),
        ({"sprite": "walk", "count": 2}, "count"),
        ({"sprite": "idle", "count": 4}, "count"),
        ({"sprite": "variations", "count": 5}, "count"),
        ({"count": 5}, "count"),
        ({"background": "black"}, "background"),
        ({"aspect": "16:9"}, "aspect"),
        ({"model": "flux"}, "model"),
        ({"mode": "edit"}, "mode"),
        ({"size": "2K"}, "size"),
        ({"style": "anime"}, "style"),
        ({"seed": 7}, "seed"),
        ({"steps": 4}, "steps"),
        ({"references": ("http://127.0.0.1/a.png",)}, "references"),
    ],
)
def test_check_refuses_what_qtpixel_cannot_do(fields: dict, field: str):
    [unsupported] = Qtpixel.check(spec(**fields))

    assert unsupported.field == field and unsupported.reason


# Against the sandbox


def test_a_single_job_is_one_task_whose_picture_is_below_the_base(qtpixel: Qtpixel, sandbox_server):
    [task_id] = started(qtpixel.submit(spec(background="transparent")))

    [status] = poll_until_done(qtpixel, [task_id]).values()

    assert task_id.isdigit() and qtpixel.poll_group(task_id) == task_id
    assert isinstance(status, Finished)
    [image] = status.images
    assert image.url == f"{sandbox_server.base_url('qtpixel')}/static/gallery/{task_id}.png"
    picture = Image.open(io.BytesIO(httpx.get(image.url).content))
    assert picture.mode == "RGBA" and picture.getchannel("A").getextrema()[0] == 0
    assert kinds(sandbox_server) == ["submit", "poll", "download"]


def test_the_same_prompt_twice_starts_two_tasks_since_force_is_sent(qtpixel: Qtpixel):
    first = started(qtpixel.submit(spec("一只可爱的猫")))
    poll_until_done(qtpixel, first)

    second = started(qtpixel.submit(spec("一只可爱的猫")))

    assert first != second


def test_duplicates_found_when_asked_not_to_force_is_an_invalid_request(qtpixel: Qtpixel, sandbox_server):
    qtpixel.submit(spec("一只可爱的猫"))

    with pytest.raises(InvalidRequest, match="started nothing"):
        qtpixel.submit(spec("一只可爱的猫", options={"force": False}))
    assert len(sandbox_server.stats()["requests"]) == 2


@pytest.mark.parametrize(("sprite", "frames"), [("walk", 4), ("idle", 2), ("attack", 3), ("directions", 4)])
def test_a_sprite_is_one_batch_of_its_frames_polled_in_one_request(
    qtpixel: Qtpixel, direct: httpx.Client, sandbox_server, sprite: str, frames: int
):
    task_ids = started(qtpixel.submit(spec("a pixel-art knight", sprite=sprite)))

    statuses = qtpixel.poll(task_ids)

    assert kinds(sandbox_server) == ["submit", "poll_many"]
    assert len(task_ids) == frames and len({qtpixel.poll_group(t) for t in task_ids}) == 1
    batch_id = qtpixel.poll_group(task_ids[0]).removeprefix("b")
    assert [t.partition(":")[0] for t in task_ids] == [f"b{batch_id}"] * frames
    assert direct.get(f"/api/v1/batch/{batch_id}").json()["batch"]["mode"] == sprite
    assert list(statuses) == list(task_ids)
    urls = [image.url for status in statuses.values() if isinstance(status, Finished) for image in status.images]
    assert len(set(urls)) == frames


def test_several_pictures_without_a_sprite_are_a_random_batch(qtpixel: Qtpixel, direct: httpx.Client):
    task_ids = started(qtpixel.submit(spec(count=3, background="white")))

    batch = direct.get(f"/api/v1/batch/{qtpixel.poll_group(task_ids[0]).removeprefix('b')}").json()

    assert (batch["batch"]["mode"], batch["batch"]["requested_count"], len(task_ids)) == ("random", 3, 3)


def test_a_poll_of_a_single_task_and_a_batch_asks_each_once(qtpixel: Qtpixel, sandbox_server):
    single = started(qtpixel.submit(spec()))
    frames = started(qtpixel.submit(spec("a slime", sprite="idle")))

    statuses = qtpixel.poll([*frames, *single])

    assert list(statuses) == [*frames, *single]
    assert all(isinstance(s, Finished) for s in statuses.values())
    assert kinds(sandbox_server)[2:] == ["poll_many", "poll"]


def test_a_slow_batch_is_still_running(qtpixel: Qtpixel, sandbox_server):
    sandbox_server.configure("qtpixel", latency_mean=30.0)
    task_ids = started(qtpixel.submit(spec(sprite="walk")))

    assert all(isinstance(s, StillRunning) for s in qtpixel.poll(task_ids).values())


def test_unsafe_frames_are_refused_for_good(qtpixel: Qtpixel):
    task_ids = started(qtpixel.submit(spec("a knight sandbox:unsafe", sprite="attack")))

    statuses = poll_until_done(qtpixel, task_ids).values()

    assert all(isinstance(s, TaskFailed) and s.refused and "AI 拒绝处理此请求" in s.reason for s in statuses)


def test_a_deleted_task_fails_in_its_batch_and_alone(qtpixel: Qtpixel, direct: httpx.Client):
    frames = started(qtpixel.submit(spec(sprite="idle")))
    [single] = started(qtpixel.submit(spec("a coin")))
    for task_id in (frames[0].partition(":")[2], single):
        assert direct.delete(f"/api/v1/task/{task_id}").status_code == 200

    statuses = qtpixel.poll([*frames, single])

    gone, kept, alone = statuses.values()
    assert isinstance(gone, TaskFailed) and not gone.refused and "no longer in batch" in gone.reason
    assert isinstance(kept, Finished)
    assert isinstance(alone, TaskFailed) and "gone" in alone.reason


def test_a_batch_that_costs_more_than_the_balance_is_out_of_credits(qtpixel: Qtpixel, sandbox_server):
    sandbox_server.configure("qtpixel", credits=3)

    with pytest.raises(OutOfCredits, match="insufficient credits"):
        qtpixel.submit(spec(sprite="walk"))
    assert started(qtpixel.submit(spec(sprite="attack")))


# Answers the sandbox never gives


def mocked(
    handler: Callable[[httpx.Request], httpx.Response], base_url: str = "https://qt.example/proxy/qt"
) -> Qtpixel:
    return Qtpixel(httpx.Client(transport=httpx.MockTransport(handler)), account(base_url), KEY)


def test_an_image_path_keeps_the_bases_own_path_and_the_request_carries_the_key():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": 5, "status": "completed", "image_path": "/static/gallery/5.png"})

    [status] = mocked(answer).poll(["5"]).values()

    assert isinstance(status, Finished)
    assert status.images[0].url == "https://qt.example/proxy/qt/static/gallery/5.png"
    assert str(seen[0].url) == "https://qt.example/proxy/qt/api/v1/task/5"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"


def test_the_submit_body_forces_and_mails_nobody_unless_the_options_say():
    bodies: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"task_id": 9, "status": "pending"})

    adapter = mocked(answer)
    adapter.submit(spec(background="white"))
    adapter.submit(spec(options={"send_email": True, "scale": 10}))

    assert bodies == [
        {"prompt": "a pixel-art treasure chest", "send_email": False, "background": "white", "force": True},
        {"prompt": "a pixel-art treasure chest", "send_email": True, "force": True, "scale": 10},
    ]


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        (httpx.Response(200, text="<html>ok</html>"), AnswerLost),
        (httpx.Response(200, json={"status": "pending"}), AnswerLost),
        (httpx.Response(504, text="<html>gateway time-out</html>"), AnswerLost),
        (httpx.Response(502, text="<html>bad gateway</html>"), AnswerLost),
        (httpx.Response(500, json={"error": "服务器错误 - 内部错误"}), Transient),
        (httpx.Response(404, json={"error": "未找到 - 资源不存在"}), InvalidRequest),
    ],
)
def test_answers_to_a_submit_map_to_outcomes(response: httpx.Response, outcome: type[Exception]):
    with pytest.raises(outcome):
        mocked(lambda request: response).submit(spec())


def test_a_failure_that_is_not_the_refusal_is_not_refused():
    item = {"id": 3, "status": "failed", "error_msg": "⚠️ 生成失败: 上游超时"}

    [status] = mocked(lambda request: httpx.Response(200, json=item)).poll(["3"]).values()

    assert status == TaskFailed("⚠️ 生成失败: 上游超时", refused=False)
