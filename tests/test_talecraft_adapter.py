"""The talecraft adapter: against the sandbox over real HTTP for every outcome, and against
``httpx.MockTransport`` for answers the sandbox never gives (the same message under another status)."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

import sandbox.talecraft  # noqa: F401  (registers the provider before any server starts)
from jobs.accounts import Account
from jobs.errors import ConfigError
from jobs.spec import JobSpec
from workers.providers.base import (
    AnswerLost,
    BadCredentials,
    Finished,
    InvalidRequest,
    OutOfCredits,
    ProviderError,
    RateLimited,
    TaskFailed,
    Transient,
)
from workers.providers.talecraft import Talecraft

KEY = "tc-adapter-key"


def account(base_url: str, **options: str) -> Account:
    return Account(
        name="tc", provider="talecraft", api_key_env="UNUSED", base_url=base_url, rpm=60, max_in_flight=4,
        options=options,
    )  # fmt: skip


@pytest.fixture
def talecraft(sandbox_server):
    with httpx.Client(timeout=5) as client:
        yield Talecraft(client, account(sandbox_server.base_url("talecraft")), KEY)


def spec(prompt: str = "a fox reading under a tree", **fields) -> JobSpec:
    return JobSpec(prompt=prompt, provider="talecraft", **fields)


def picture_size(url: str) -> tuple[int, int]:
    response = httpx.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content)).size


# What check lets through, and what it refuses before anything is sent


def test_check_takes_the_documented_style_and_aspects():
    assert Talecraft.check(spec(style="children_book", aspect="16:9")) == []
    assert Talecraft.check(spec(aspect="9:16", options={"aspect_ratio": "5:4"})) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"style": "anime"}, "style"),
        ({"aspect": "21:9"}, "aspect"),
        ({"aspect": "5:4"}, "aspect"),
        ({"count": 2}, "count"),
        ({"model": "flux"}, "model"),
        ({"references": ("http://127.0.0.1/a.png",)}, "references"),
        ({"seed": 7}, "seed"),
        ({"size": "2K"}, "size"),
    ],
)
def test_check_refuses_what_talecraft_cannot_do(fields: dict, field: str):
    [unsupported] = Talecraft.check(spec(**fields))

    assert unsupported.field == field and unsupported.reason


# Against the sandbox


def test_submit_answers_finished_with_the_picture_of_the_asked_aspect(talecraft: Talecraft, sandbox_server):
    submitted = talecraft.submit(spec(style="children_book", aspect="16:9"))

    assert isinstance(submitted, Finished)
    [image] = submitted.images
    assert picture_size(image.url) == (128, 72)
    assert [r["kind"] for r in sandbox_server.stats()["requests"]] == ["submit", "download"]


def test_the_call_waits_for_a_slow_picture_longer_than_the_clients_own_time_out(sandbox_server):
    sandbox_server.configure("talecraft", latency_mean=1.0)

    with httpx.Client(timeout=0.2) as short:
        submitted = Talecraft(short, account(sandbox_server.base_url("talecraft")), KEY).submit(spec())

    assert isinstance(submitted, Finished)


def test_the_accounts_timeout_option_bounds_the_wait_and_a_late_answer_is_lost(sandbox_server):
    sandbox_server.configure("talecraft", latency_mean=3.0)

    with httpx.Client(timeout=5) as client:
        adapter = Talecraft(client, account(sandbox_server.base_url("talecraft"), timeout="0.3"), KEY)
        with pytest.raises(AnswerLost):
            adapter.submit(spec())


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_timeout_option_that_is_not_seconds_is_a_config_error(value: str):
    with httpx.Client() as client, pytest.raises(ConfigError, match=r"options\.timeout"):
        Talecraft(client, account("http://127.0.0.1:9", timeout=value), KEY)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"aspect_ratio": "5:4"}, "Unsupported aspect_ratio"), ({"style": "anime"}, "Unsupported style")],
)
def test_options_the_provider_refuses_are_an_invalid_request(talecraft: Talecraft, options: dict, message: str):
    with pytest.raises(InvalidRequest, match=message):
        talecraft.submit(spec(options=options))


def test_a_failed_generation_is_transient(talecraft: Talecraft):
    with pytest.raises(Transient, match="Generation failed"):
        talecraft.submit(spec("a storm sandbox:fail"))


@pytest.mark.parametrize("key", ["", "invalid-tc-key"])
def test_a_missing_or_wrong_key_is_bad_credentials(sandbox_server, key: str):
    with httpx.Client(timeout=5) as client:
        adapter = Talecraft(client, account(sandbox_server.base_url("talecraft")), key)
        with pytest.raises(BadCredentials) as refused:
            adapter.submit(spec())
    assert key == "" or key not in str(refused.value)


def test_an_empty_balance_is_out_of_credits(talecraft: Talecraft, sandbox_server):
    sandbox_server.configure("talecraft", credits=0)

    with pytest.raises(OutOfCredits, match="insufficient credits"):
        talecraft.submit(spec())


def test_a_429_is_rate_limited_with_its_wait(talecraft: Talecraft, sandbox_server):
    sandbox_server.configure("talecraft", rpm=1)
    talecraft.submit(spec())

    with pytest.raises(RateLimited) as limited:
        talecraft.submit(spec("another fox"))

    assert 0 < limited.value.retry_after <= 60


def test_poll_sends_nothing_and_answers_every_id_failed(talecraft: Talecraft, sandbox_server):
    statuses = talecraft.poll(["9da9465c-a56c-4614-81af-257aaccb2646"])

    [status] = statuses.values()
    assert isinstance(status, TaskFailed) and not status.refused
    assert sandbox_server.stats()["requests"] == []


# Statuses the seed leaves open: the message decides


def mocked(status: int, content: bytes, content_type: str = "application/json") -> Talecraft:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=content,
                                                                   headers={"Content-Type": content_type}))  # fmt: skip
    return Talecraft(httpx.Client(transport=transport), account("https://talescaleai.com"), KEY)


@pytest.mark.parametrize(
    ("status", "message", "outcome"),
    [
        (200, "insufficient credits", OutOfCredits),
        (400, "Invalid API key", BadCredentials),
        (403, "API key is required...", BadCredentials),
        (500, "Unsupported style", InvalidRequest),
        (200, "prompt is required", InvalidRequest),
        (400, "Generation failed", Transient),
        (418, "something new", InvalidRequest),
        (503, "something new", Transient),
    ],
)
def test_an_error_is_classified_by_its_message_whatever_the_status(
    status: int, message: str, outcome: type[ProviderError]
):
    body = f'{{"code": -1, "message": "{message}"}}'.encode()

    with pytest.raises(outcome) as raised:
        mocked(status, body).submit(spec())

    assert type(raised.value) is outcome


@pytest.mark.parametrize(
    ("status", "content", "outcome"),
    [
        (200, b'{"code": 0, "message": "ok", "data": {"id": "x", "status": "success"}}', AnswerLost),
        (200, b"<html>ok</html>", AnswerLost),
        (504, b"<html>Gateway Timeout</html>", AnswerLost),
        (502, b"<html>Bad Gateway</html>", AnswerLost),
        (502, b'{"message": "Internal server error"}', AnswerLost),  # a gateway's JSON, not TaleCraft's shape
    ],
)
def test_an_answer_without_a_readable_picture_is_lost_when_it_may_have_been_made(
    status: int, content: bytes, outcome: type[ProviderError]
):
    with pytest.raises(outcome) as raised:
        mocked(status, content, "text/html").submit(spec())

    assert type(raised.value) is outcome
