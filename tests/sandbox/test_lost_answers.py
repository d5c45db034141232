"""Server errors and lost answers, for every provider, as a client sees them over HTTP and as the
sandbox's record tells them afterwards.

At ``error_rate`` a submit answers the provider's own server error and starts nothing; at
``gateway_rate`` the provider takes the submit (starts it, charges it, lists it) and the client gets a
gateway's 502 page instead of the answer. The record's ``submissions`` say which paid submits' answers
the client never saw, so a harness can hold a client to account for them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer
from sandbox.state import World
from sandbox.stats import key_id

KEY = "lost-answers-test-key-0001"
PROMPT = "a lighthouse at dusk"
ENDPOINT = "lXynAhfbAiD"
"""The cloudsway deployment's endpoint path, as in its seed."""


@dataclass(frozen=True)
class Contract:
    """What a test needs of one provider's submit: how to send it, and what its answers look like."""

    provider: str
    base_path: str
    """After the provider's prefix: cloudsway's deployment base path, empty for the others."""
    submit_path: str
    body: Callable[[str], dict[str, Any]]
    """The submit body for a prompt."""
    headers: dict[str, str]
    accepted: int
    """The status of a successful submit."""
    task_ids: Callable[[Any], list[str | int]]
    """The task ids a successful submit's answer names, as the client reads them."""
    task_path: str
    """Where the client finds one of those tasks again (``{id}``): a poll, or talecraft's picture."""
    server_error: tuple[int, dict[str, Any]]
    """The status and body of the provider's own server error."""
    out_of_credits: int
    listing: str | None = None
    """The provider's own list of the key's work, answering ``total``, where it has one."""


UPSTREAM_503 = "Upstream image service failed: 503 Service Unavailable"
UNAVAILABLE = "Inference service unavailable, please retry later"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


CONTRACTS = [
    Contract(
        "gencraft", "", "/api/v1/generate", lambda prompt: {"prompt": prompt}, bearer(KEY), 200,
        lambda body: body["task_ids"], "/api/v1/tasks/{id}",
        (500, {"error": {"type": "upstream_error", "message": UPSTREAM_503}}),
        402, "/api/v1/history",
    ),
    Contract(
        "girlgenerator", "", "/api/v1/generate", lambda prompt: {"scene": "text-to-image", "prompt": prompt},
        bearer(KEY), 201, lambda body: [body["task_id"]], "/api/v1/tasks/{id}",
        (500, {"error": {"code": "internal_error", "message": "Internal server error, please try again later"}}),
        403,
    ),
    Contract(
        "qtpixel", "", "/api/v1/generate", lambda prompt: {"prompt": prompt}, bearer(KEY), 200,
        lambda body: [body["task_id"]], "/api/v1/task/{id}",
        (500, {"error": "服务器错误 - 内部错误", "details": "upstream image model failed: 503 Service Unavailable"}),
        403, "/api/v1/tasks",
    ),
    Contract(
        "talecraft", "", "/api/v1/generate", lambda prompt: {"prompt": prompt}, {"X-API-Key": KEY}, 200,
        lambda body: [body["data"]["id"]], "/uploads/illustrations/{id}.jpeg",
        (500, {"code": -1, "message": "Generation failed"}), 402,
    ),
    Contract(
        "cloudsway", "/v2/ai", f"/{ENDPOINT}/images/generations", lambda prompt: {"prompts": prompt},
        bearer(KEY), 200, lambda body: [body["taskId"]], f"/{ENDPOINT}/images/tasks/{{id}}",
        (500, {"status": "error", "code": "internal_error", "message": UNAVAILABLE}),
        402,
    ),
]  # fmt: skip
NO_ANSWERS_LOST = {"normal": 0, "gateway": 0, "held_back": 0}


@pytest.fixture(params=CONTRACTS, ids=lambda contract: contract.provider)
def contract(request: pytest.FixtureRequest) -> Contract:
    return request.param


@pytest.fixture
def client(sandbox: SandboxServer, contract: Contract) -> Iterator[httpx.Client]:
    """A client of the contract's provider, holding ``KEY``."""
    base_url = sandbox.base_url(contract.provider) + contract.base_path
    with httpx.Client(base_url=base_url, headers=contract.headers, timeout=10.0) as client:
        yield client


def submit(client: httpx.Client, contract: Contract, prompt: str = PROMPT) -> httpx.Response:
    return client.post(contract.submit_path, json=contract.body(prompt))


def listed(client: httpx.Client, contract: Contract) -> int | None:
    """How much work the provider's own list shows for the key, or None where it has no list."""
    if contract.listing is None:
        return None
    response = client.get(contract.listing)
    assert response.status_code == 200
    total: int = response.json()["total"]
    return total


def submit_statuses(stats: dict[str, Any]) -> list[int]:
    return [r["status"] for r in stats["requests"] if r["kind"] == "submit"]


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# error_rate


def test_at_error_rate_one_a_submit_answers_the_providers_server_error_and_costs_nothing(
    sandbox: SandboxServer, contract: Contract, client: httpx.Client
):
    sandbox.configure(contract.provider, error_rate=1.0, credits=1)

    response = submit(client, contract)

    assert (response.status_code, response.json()) == contract.server_error
    stats = sandbox.stats()
    assert submit_statuses(stats) == [500]
    assert (stats["submissions"], stats["answers"]) == ([], NO_ANSWERS_LOST)
    assert listed(client, contract) in (0, None)
    sandbox.configure(contract.provider, error_rate=0.0)
    assert submit(client, contract).status_code == contract.accepted  # the one credit is still there


def test_a_bad_submit_is_refused_as_bad_even_at_error_rate_one(
    sandbox: SandboxServer, contract: Contract, client: httpx.Client
):
    sandbox.configure(contract.provider, error_rate=1.0)

    response = client.post(contract.submit_path, json={})

    assert 400 <= response.status_code < 500


# gateway_rate


def test_at_gateway_rate_one_a_submit_gets_a_502_page_yet_its_work_was_started_and_paid_for(
    sandbox: SandboxServer, contract: Contract, client: httpx.Client
):
    sandbox.configure(contract.provider, gateway_rate=1.0, credits=1)

    response = submit(client, contract)

    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>") and "<title>502 Bad Gateway</title>" in response.text
    assert not is_json(response.text)
    stats = sandbox.stats()
    assert submit_statuses(stats) == [502]
    [record] = stats["submissions"]
    assert (record["provider"], record["key_id"], record["prompt"]) == (contract.provider, key_id(KEY), PROMPT)
    assert (record["answer"], stats["answers"]) == ("gateway", {**NO_ANSWERS_LOST, "gateway": 1})
    sandbox.configure(contract.provider, gateway_rate=0.0)
    # The provider knows the work by the ids its lost answer would have named.
    assert record["task_ids"]
    for task_id in record["task_ids"]:
        assert client.get(contract.task_path.format(id=task_id)).status_code == 200
    assert listed(client, contract) in (1, None)
    assert submit(client, contract, "another lighthouse").status_code == contract.out_of_credits


def test_a_submit_refused_at_gateway_rate_one_keeps_its_own_answer(
    sandbox: SandboxServer, contract: Contract, client: httpx.Client
):
    sandbox.configure(contract.provider, gateway_rate=1.0)

    response = client.post(contract.submit_path, json={})

    assert 400 <= response.status_code < 500 and is_json(response.text)
    assert sandbox.stats()["submissions"] == []


# Both at zero, the default


def test_at_both_rates_zero_a_submit_is_answered_and_recorded_as_answered(
    sandbox: SandboxServer, contract: Contract, client: httpx.Client
):
    config = sandbox.configure(contract.provider, credits=1)
    assert (config["error_rate"], config["gateway_rate"]) == (0, 0)

    response = submit(client, contract)

    assert response.status_code == contract.accepted
    stats = sandbox.stats()
    assert submit_statuses(stats) == [contract.accepted]
    [record] = stats["submissions"]
    assert (record["task_ids"], record["answer"]) == (contract.task_ids(response.json()), "normal")
    assert stats["answers"] == {**NO_ANSWERS_LOST, "normal": 1}
    assert {"requests", "by_key", "by_kind", "rate_limited", "repeated_submissions"} <= set(stats)
    assert submit(client, contract, "another lighthouse").status_code == contract.out_of_credits


# The record of answers


def test_a_batch_is_recorded_with_the_integer_ids_its_answer_names(sandbox: SandboxServer):
    with httpx.Client(base_url=sandbox.base_url("qtpixel"), headers=bearer(KEY), timeout=10.0) as qtpixel:
        answer = qtpixel.post("/api/v1/batch-generate", json={"prompt": "a knight", "mode": "walk"}).json()

    [record] = sandbox.stats()["submissions"]
    assert record["task_ids"] == answer["task_ids"] == [1, 2, 3, 4]


def test_a_held_back_answer_is_recorded_as_held_back(sandbox: SandboxServer):
    sandbox.configure("gencraft", timeout_rate=1.0, hang_seconds=0.2)
    with httpx.Client(base_url=sandbox.base_url("gencraft"), headers=bearer(KEY), timeout=10.0) as gencraft:
        response = gencraft.post("/api/v1/generate", json={"prompt": "a late answer"})

    assert response.status_code == 200
    [record] = sandbox.stats()["submissions"]
    assert (record["task_ids"], record["answer"]) == (response.json()["task_ids"], "held_back")


def test_a_gateway_page_held_back_counts_as_held_back(sandbox: SandboxServer):
    sandbox.configure("gencraft", timeout_rate=1.0, hang_seconds=0.2, gateway_rate=1.0)
    with httpx.Client(base_url=sandbox.base_url("gencraft"), headers=bearer(KEY), timeout=10.0) as gencraft:
        response = gencraft.post("/api/v1/generate", json={"prompt": "a late page"})

    assert response.status_code == 502
    assert sandbox.stats()["answers"] == {**NO_ANSWERS_LOST, "held_back": 1}


def test_each_request_marks_only_the_submissions_it_made(sandbox: SandboxServer):
    """A talecraft call waits for its picture while a gencraft submit is lost at the gateway: each
    keeps its own mark, though both were recorded while the talecraft call was open."""
    sandbox.configure("talecraft", latency_mean=0.5)
    sandbox.configure("gencraft", gateway_rate=1.0)
    statuses: list[int] = []

    def slow_call() -> None:
        with httpx.Client(base_url=sandbox.base_url("talecraft"), headers={"X-API-Key": KEY}, timeout=10.0) as tc:
            statuses.append(tc.post("/api/v1/generate", json={"prompt": "a slow fox"}).status_code)

    caller = threading.Thread(target=slow_call)
    caller.start()
    deadline = time.monotonic() + 5
    while not sandbox.stats()["submissions"] and time.monotonic() < deadline:
        time.sleep(0.01)
    with httpx.Client(base_url=sandbox.base_url("gencraft"), headers=bearer(KEY), timeout=10.0) as gencraft:
        lost = gencraft.post("/api/v1/generate", json={"prompt": "a quick cat"})
    caller.join()

    assert (lost.status_code, statuses) == (502, [200])
    answers = {r["provider"]: r["answer"] for r in sandbox.stats()["submissions"]}
    assert answers == {"talecraft": "normal", "gencraft": "gateway"}


# The draws


def test_a_rate_of_zero_draws_nothing_so_seeded_runs_repeat_as_before():
    world = World(SandboxConfig(seed=7))
    before = world.rng.getstate()

    drawn = [world.server_error("gencraft"), world.gateway_lost("gencraft")]

    assert drawn == [False, False]
    assert world.rng.getstate() == before


def test_a_seed_makes_the_draws_repeat():
    config = SandboxConfig(seed=7, defaults={"error_rate": 0.5, "gateway_rate": 0.5})

    def draws() -> list[bool]:
        world = World(config)
        return [draw("cloudsway") for _ in range(20) for draw in (world.server_error, world.gateway_lost)]

    first = draws()
    assert first == draws()
    assert True in first and False in first


def test_a_rate_outside_zero_to_one_is_refused(control: httpx.Client):
    responses = [control.put("/config/qtpixel", json={field: value})
                 for field in ("error_rate", "gateway_rate") for value in (-0.1, 1.5)]  # fmt: skip

    assert [r.status_code for r in responses] == [400] * 4
    assert control.get("/config").json()["providers"] == {}
