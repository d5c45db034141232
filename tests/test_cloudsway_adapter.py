"""The cloudsway adapter against the sandbox over real HTTP: what it sends, what it refuses before
sending, and how it reads the answers the seed documents and the ones it leaves out."""

from __future__ import annotations

import time

import httpx
import pytest

import sandbox.cloudsway  # noqa: F401  (registers the provider before any server starts)
from jobs.accounts import Account
from jobs.spec import JobSpec
from workers.providers.base import (
    BadCredentials,
    Finished,
    InvalidRequest,
    OutOfCredits,
    StillRunning,
    TaskFailed,
    TaskStatus,
)
from workers.providers.cloudsway import Cloudsway

ENDPOINT = "lXynAhfbAiD"


def account(base_url: str, **options: str) -> Account:
    return Account(
        name="cloudsway-1", provider="cloudsway", api_key_env="UNUSED", base_url=base_url, rpm=60, max_in_flight=4,
        options=options,
    )  # fmt: skip


@pytest.fixture
def base_url(sandbox_server) -> str:
    sandbox_server.reset()
    return f"{sandbox_server.base_url('cloudsway')}/v2/ai"


@pytest.fixture
def cloudsway(base_url: str):
    with httpx.Client(timeout=5) as client:
        yield Cloudsway(client, account(base_url, endpoint=ENDPOINT), "RW-adapter-key")


def spec(prompt: str = "a fruit basket", **fields) -> JobSpec:
    return JobSpec(prompt=prompt, provider="cloudsway", **fields)


def poll_until_done(adapter: Cloudsway, task_id: str, timeout: float = 10) -> TaskStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = adapter.poll([task_id])[task_id]
        if not isinstance(status, StillRunning):
            return status
        time.sleep(0.05)
    raise AssertionError("the task did not finish")


# check: refused before anything is sent


def test_a_job_within_the_documented_ranges_passes_check():
    assert Cloudsway.check(spec(count=8, steps=10, aspect="9:16", seed=42)) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"count": 9}, "count"),
        ({"steps": 3}, "steps"),
        ({"steps": 11}, "steps"),
        ({"aspect": "21:9"}, "aspect"),
        ({"size": "2K"}, "size"),
        ({"model": "flux-dev"}, "model"),
        ({"references": ("https://example.com/a.png",)}, "references"),
    ],
)
def test_check_refuses_what_the_deployment_cannot_do(fields: dict, field: str):
    [unsupported] = Cloudsway.check(spec(**fields))

    assert unsupported.field == field and unsupported.reason


def test_count_nine_is_refused_with_the_range():
    [unsupported] = Cloudsway.check(spec(count=9))

    assert "1 to 8" in unsupported.reason and "9" in unsupported.reason


# submit and poll


def test_one_task_makes_every_picture_of_the_count(cloudsway: Cloudsway, sandbox_server):
    started = cloudsway.submit(spec(count=3, aspect="3:2", steps=6, seed=7))

    [task_id] = started.task_ids
    status = poll_until_done(cloudsway, task_id)
    assert isinstance(status, Finished) and len(status.images) == 3
    assert sandbox_server.stats()["by_kind"]["submit"] == 1


def test_the_request_carries_the_fields_in_the_deployments_names(base_url: str):
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success", "taskId": "t-1"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        adapter = Cloudsway(client, account("https://genaiapi.cloudsway.net/v2/ai/", endpoint=ENDPOINT), "RW-k")
        adapter.submit(spec(count=2, aspect="16:9", steps=4, seed=0, options={"extra": "kept"}))

    [request] = seen
    assert str(request.url) == f"https://genaiapi.cloudsway.net/v2/ai/{ENDPOINT}/images/generations"
    assert request.headers["authorization"] == "Bearer RW-k"
    assert httpx.Response(200, content=request.content).json() == {
        "prompts": "a fruit basket", "batchsize": 2, "aspect_ratio": "16:9", "step": 4, "seed": 0, "extra": "kept",
    }  # fmt: skip


def test_a_slow_task_is_still_running(cloudsway: Cloudsway, sandbox_server):
    sandbox_server.configure("cloudsway", latency_mean=5.0)
    [task_id] = cloudsway.submit(spec()).task_ids

    assert isinstance(cloudsway.poll([task_id])[task_id], StillRunning)


def test_a_failed_task_says_why(cloudsway: Cloudsway):
    [task_id] = cloudsway.submit(spec("a storm sandbox:fail")).task_ids

    status = poll_until_done(cloudsway, task_id)

    assert isinstance(status, TaskFailed) and "model overloaded" in status.reason and not status.refused


def test_an_unknown_task_is_failed_rather_than_polled_for_ever(cloudsway: Cloudsway):
    status = cloudsway.poll(["00000000-0000-0000-0000-000000000000"])["00000000-0000-0000-0000-000000000000"]

    assert isinstance(status, TaskFailed) and "not found" in status.reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "queued"}, StillRunning),
        ({"status": "processing", "completed": False}, StillRunning),
        ({}, StillRunning),
        ({"status": "failed", "message": "nsfw"}, TaskFailed),
        ({"status": "completed", "completed": True, "imageUrls": []}, TaskFailed),
        ({"status": "completed", "completed": True, "imageUrls": ["http://x/1.png", "http://x/2.png"]}, Finished),
    ],
)
def test_undocumented_task_answers_are_read_as_running_unless_failed(body: dict, expected: type):
    with httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, json=body))) as client:
        adapter = Cloudsway(client, account("https://genaiapi.cloudsway.net/v2/ai", endpoint=ENDPOINT), "RW-k")
        status = adapter.poll(["t-1"])["t-1"]

    assert isinstance(status, expected)


# what cannot be sent


def test_a_missing_endpoint_option_names_the_account_and_the_option(base_url: str, sandbox_server):
    with httpx.Client(timeout=5) as client:
        adapter = Cloudsway(client, account(base_url), "RW-adapter-key")
        with pytest.raises(InvalidRequest) as refused:
            adapter.submit(spec())

    assert "cloudsway-1" in str(refused.value) and "options.endpoint" in str(refused.value)
    assert sandbox_server.stats()["requests"] == []


def test_a_step_the_deployment_refuses_is_an_invalid_request(cloudsway: Cloudsway):
    with pytest.raises(InvalidRequest, match="step"):
        cloudsway.submit(spec(options={"step": 99}))


def test_a_wrong_key_is_bad_credentials_and_never_named(base_url: str):
    with httpx.Client(timeout=5) as client:
        adapter = Cloudsway(client, account(base_url, endpoint=ENDPOINT), "invalid-RW-123")
        with pytest.raises(BadCredentials) as refused:
            adapter.submit(spec())

    assert "invalid-RW-123" not in str(refused.value)


def test_a_batch_larger_than_the_balance_is_out_of_credits(cloudsway: Cloudsway, sandbox_server):
    sandbox_server.configure("cloudsway", credits=2)

    with pytest.raises(OutOfCredits):
        cloudsway.submit(spec(count=3))
