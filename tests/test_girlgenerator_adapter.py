"""The girlgenerator adapter against the sandbox over real HTTP: what it sends, what it refuses before
sending, and how it reads the answers the seed documents, the content refusal among them.

The conformance suite covers the outcomes every adapter shares; these are girlgenerator's own."""

from __future__ import annotations

import json

import httpx
import pytest

import sandbox.girlgenerator  # noqa: F401  (registers the provider before any server starts)
from jobs.accounts import Account
from jobs.spec import JobSpec
from workers.providers.base import (
    Cost,
    Finished,
    InvalidRequest,
    OutOfCredits,
    RateLimited,
    Started,
    StillRunning,
    TaskFailed,
)
from workers.providers.girlgenerator import Girlgenerator

REFERENCE = "https://example.com/reference.png"


def account(base_url: str) -> Account:
    return Account(
        name="girlgenerator-1", provider="girlgenerator", api_key_env="UNUSED", base_url=base_url, rpm=10,
        max_in_flight=4,
    )  # fmt: skip


@pytest.fixture
def girlgenerator(sandbox_server):
    sandbox_server.reset()
    with httpx.Client(timeout=5) as client:
        yield Girlgenerator(client, account(sandbox_server.base_url("girlgenerator")), "gg-adapter-key")


def spec(prompt: str = "a girl reading under a cherry tree", **fields) -> JobSpec:
    return JobSpec(prompt=prompt, provider="girlgenerator", **fields)


def sent_body(job: JobSpec) -> dict:
    """The JSON the adapter sends for ``job``, caught by a mock transport."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"task_id": "abc123", "status": "pending", "credits_used": 1})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        Girlgenerator(client, account("https://girlgenerator.app/"), "gg-k").submit(job)
    [request] = seen
    assert str(request.url) == "https://girlgenerator.app/api/v1/generate"
    assert request.headers["authorization"] == "Bearer gg-k"
    return json.loads(request.content)


# check: refused before anything is sent


def test_jobs_within_the_documented_limits_pass_check():
    assert Girlgenerator.check(spec("x" * 2000, aspect="9:16")) == []
    assert Girlgenerator.check(spec(mode="image-to-image", references=(REFERENCE,), aspect="auto")) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": "x" * 2001}, "prompt"),
        ({"aspect": "5:4"}, "aspect"),
        ({"aspect": "21:9"}, "aspect"),
        ({"mode": "image-to-image"}, "references"),
        ({"mode": "text-to-image", "references": (REFERENCE,)}, "references"),
        ({"mode": "edit"}, "mode"),
        ({"count": 2}, "count"),
        ({"model": "pro"}, "model"),
        ({"size": "2K"}, "size"),
        ({"seed": 7}, "seed"),
    ],
)
def test_check_refuses_what_the_api_cannot_do(fields: dict, field: str):
    [unsupported] = Girlgenerator.check(spec(**fields))

    assert unsupported.field == field and unsupported.reason


def test_a_prompt_too_long_is_refused_with_its_length_and_the_limit():
    [unsupported] = Girlgenerator.check(spec("x" * 2001))

    assert "2001" in unsupported.reason and "2000" in unsupported.reason


def test_the_cost_follows_the_scene_and_its_references():
    assert Girlgenerator.cost(spec()) == Cost(credits=1)
    assert Girlgenerator.cost(spec(references=(REFERENCE,))) == Cost(credits=2)
    assert Girlgenerator.cost(spec(references=(REFERENCE, REFERENCE))) == Cost(credits=3)


# what is sent


def test_a_plain_job_is_text_to_image_with_the_api_choosing_the_aspect():
    assert sent_body(spec()) == {"scene": "text-to-image", "prompt": "a girl reading under a cherry tree"}


def test_references_make_an_image_to_image_generation_and_options_go_last():
    body = sent_body(spec(aspect="3:4", references=(REFERENCE,), options={"aspect_ratio": "4:3", "extra": 1}))

    assert body == {
        "scene": "image-to-image", "prompt": "a girl reading under a cherry tree", "aspect_ratio": "4:3",
        "image_input": [REFERENCE], "extra": 1,
    }  # fmt: skip


# against the sandbox


def test_a_job_runs_to_one_picture_and_reports_the_balance(girlgenerator: Girlgenerator, sandbox_server):
    sandbox_server.configure("girlgenerator", credits=10)

    started = girlgenerator.submit(spec(references=(REFERENCE, REFERENCE), aspect="16:9"))
    [task_id] = started.task_ids
    status = girlgenerator.poll([task_id])[task_id]

    assert isinstance(started, Started) and started.credits_remaining == 7
    assert isinstance(status, Finished) and len(status.images) == 1
    assert httpx.get(status.images[0].url).status_code == 200


def test_a_slow_task_is_still_running(girlgenerator: Girlgenerator, sandbox_server):
    sandbox_server.configure("girlgenerator", latency_mean=30.0)
    [task_id] = girlgenerator.submit(spec()).task_ids

    assert isinstance(girlgenerator.poll([task_id])[task_id], StillRunning)


def test_a_failed_task_says_why_and_is_not_a_refusal(girlgenerator: Girlgenerator):
    [task_id] = girlgenerator.submit(spec("a storm sandbox:fail")).task_ids

    status = girlgenerator.poll([task_id])[task_id]

    assert isinstance(status, TaskFailed) and "overloaded" in status.reason and not status.refused


def test_a_content_policy_failure_is_refused_for_good(girlgenerator: Girlgenerator):
    [task_id] = girlgenerator.submit(spec("something sandbox:unsafe")).task_ids

    status = girlgenerator.poll([task_id])[task_id]

    assert isinstance(status, TaskFailed) and status.refused and "content policy" in status.reason


def test_an_unknown_task_is_failed_rather_than_polled_for_ever(girlgenerator: Girlgenerator):
    status = girlgenerator.poll(["abc123"])["abc123"]

    assert isinstance(status, TaskFailed) and "task_not_found" in status.reason


def test_an_aspect_the_api_refuses_is_an_invalid_request(girlgenerator: Girlgenerator):
    with pytest.raises(InvalidRequest, match="invalid_params"):
        girlgenerator.submit(spec(options={"aspect_ratio": "5:4"}))


def test_a_generation_dearer_than_the_balance_is_out_of_credits(girlgenerator: Girlgenerator, sandbox_server):
    sandbox_server.configure("girlgenerator", credits=2)

    with pytest.raises(OutOfCredits, match="insufficient_credits"):
        girlgenerator.submit(spec(references=(REFERENCE, REFERENCE)))


def test_polls_count_against_the_ten_a_minute(girlgenerator: Girlgenerator, sandbox_server):
    sandbox_server.configure("girlgenerator", rpm=10)
    [task_id] = girlgenerator.submit(spec()).task_ids
    for _ in range(9):
        girlgenerator.poll([task_id])

    with pytest.raises(RateLimited) as limited:
        girlgenerator.poll([task_id])

    assert Girlgenerator.polls_count_against_limit and Girlgenerator.batch_poll_size == 1
    assert 0 < limited.value.retry_after <= 60


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"task_id": "t", "status": "pending"}, StillRunning),
        ({"task_id": "t", "status": "processing"}, StillRunning),
        ({"task_id": "t", "status": "success", "images": []}, TaskFailed),
        ({"task_id": "t", "status": "success", "images": ["http://x/1.png", "http://x/2.png"]}, Finished),
        ({"task_id": "t", "status": "failed"}, TaskFailed),
    ],
)
def test_task_answers_are_read_by_status(body: dict, expected: type):
    with httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, json=body))) as client:
        status = Girlgenerator(client, account("https://girlgenerator.app"), "gg-k").poll(["t"])["t"]

    assert isinstance(status, expected)
