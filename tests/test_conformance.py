"""Every adapter against its copy in the sandbox, over real HTTP: the same scenarios for each, and
every outcome of the provider interface provoked on purpose."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence

import httpx
import pytest
from PIL import Image

from jobs.accounts import Account
from jobs.spec import JobSpec
from sandbox.state import FAIL_TRIGGER, UNSAFE_TRIGGER, UPSTREAM_ERROR_TRIGGER
from tests.conformance import Recipe, recipes
from workers.providers.base import (
    AnswerLost,
    BadCredentials,
    Finished,
    InvalidRequest,
    OutOfCredits,
    Provider,
    RateLimited,
    Refused,
    Started,
    StillRunning,
    TaskFailed,
    TaskStatus,
    Transient,
)

RECIPES = recipes()
KEY = "sk-conformance"


@pytest.fixture(params=RECIPES, ids=[recipe.provider for recipe in RECIPES])
def recipe(request: pytest.FixtureRequest, sandbox_server) -> Recipe:
    sandbox_server.reset()
    return request.param


def account_for(recipe: Recipe, base_url: str) -> Account:
    return Account(
        name=f"conformance-{recipe.provider}", provider=recipe.provider, api_key_env="UNUSED", base_url=base_url,
        rpm=60, max_in_flight=4, options=dict(recipe.account_options),
    )  # fmt: skip


def adapter_for(recipe: Recipe, sandbox_server, client: httpx.Client, key: str = KEY) -> Provider:
    base_url = recipe.base_url(sandbox_server.base_url(recipe.provider))
    return recipe.adapter(client, account_for(recipe, base_url), key)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def adapter(recipe: Recipe, sandbox_server, client: httpx.Client) -> Provider:
    return adapter_for(recipe, sandbox_server, client)


def with_prompt(spec: JobSpec, prompt: str) -> JobSpec:
    return spec.model_copy(update={"prompt": prompt})


def run_to_the_end(adapter: Provider, spec: JobSpec, timeout: float = 15) -> list[TaskStatus]:
    """Submit, then poll (in groups as the provider allows) until no task is still running."""
    submitted = adapter.submit(spec)
    if isinstance(submitted, Finished):
        return [submitted]
    assert isinstance(submitted, Started) and submitted.task_ids
    return poll_to_the_end(adapter, submitted.task_ids, timeout)


def poll_to_the_end(adapter: Provider, task_ids: Sequence[str], timeout: float = 15) -> list[TaskStatus]:
    groups: dict[str, list[str]] = {}
    for task_id in task_ids:
        groups.setdefault(adapter.poll_group(task_id), []).append(task_id)
    found: dict[str, TaskStatus] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ids in groups.values():
            for start in range(0, len(ids), adapter.batch_poll_size):
                found.update(adapter.poll(ids[start : start + adapter.batch_poll_size]))
        if all(task_id in found and not isinstance(found[task_id], StillRunning) for task_id in task_ids):
            return [found[task_id] for task_id in task_ids]
        time.sleep(0.1)
    raise AssertionError(f"still running after {timeout} s: {found}")


def pictures(statuses: list[TaskStatus], client: httpx.Client) -> list[Image.Image]:
    images = []
    for status in statuses:
        assert isinstance(status, Finished), status
        for image in status.images:
            response = client.get(image.url)
            assert response.status_code == 200, image.url
            images.append(Image.open(io.BytesIO(response.content)))
    return images


def test_a_job_runs_to_real_pictures(recipe: Recipe, adapter: Provider, client: httpx.Client):
    found = pictures(run_to_the_end(adapter, recipe.ok), client)
    assert len(found) == recipe.ok_images
    for picture in found:
        picture.verify()


def test_a_job_of_several_pictures_gives_every_one(recipe: Recipe, adapter: Provider, client: httpx.Client):
    if recipe.several is None:
        pytest.skip(f"{recipe.provider} has no job of several pictures")
    assert len(pictures(run_to_the_end(adapter, recipe.several), client)) == recipe.several_images


def test_tasks_of_one_poll_group_are_answered_by_one_request(recipe: Recipe, adapter: Provider, sandbox_server):
    if recipe.several is None or adapter.batch_poll_size == 1:
        pytest.skip(f"{recipe.provider} polls one task a request")
    submitted = adapter.submit(recipe.several)
    assert isinstance(submitted, Started) and len(submitted.task_ids) > 1
    assert len({adapter.poll_group(task_id) for task_id in submitted.task_ids}) == 1
    before = len(sandbox_server.stats()["requests"])
    statuses = adapter.poll(list(submitted.task_ids))
    assert set(statuses) == set(submitted.task_ids)
    assert len(sandbox_server.stats()["requests"]) == before + 1


def test_a_slow_task_is_still_running(recipe: Recipe, adapter: Provider, sandbox_server):
    if adapter.synchronous:
        pytest.skip(f"{recipe.provider} answers when the picture is done")
    sandbox_server.configure(recipe.provider, latency_mean=30.0)
    submitted = adapter.submit(recipe.ok)
    assert isinstance(submitted, Started)
    statuses = adapter.poll(list(submitted.task_ids)[: adapter.batch_poll_size])
    assert statuses and all(isinstance(status, StillRunning) for status in statuses.values())


def test_a_failed_generation_says_why(recipe: Recipe, adapter: Provider):
    failing = with_prompt(recipe.ok, f"a storm {FAIL_TRIGGER}")
    if recipe.failing_outcome is not None:
        with pytest.raises(recipe.failing_outcome):
            adapter.submit(failing)
        return
    statuses = run_to_the_end(adapter, failing)
    assert all(isinstance(status, TaskFailed) and not status.refused and status.reason for status in statuses)


def test_unsafe_content_is_refused_for_good(recipe: Recipe, adapter: Provider):
    if not recipe.refuses_content:
        pytest.skip(f"{recipe.provider} documents no content refusal")
    try:
        statuses = run_to_the_end(adapter, with_prompt(recipe.ok, f"something {UNSAFE_TRIGGER}"))
    except Refused:
        return
    assert all(isinstance(status, TaskFailed) and status.refused for status in statuses), statuses


def test_a_request_the_provider_rejects_is_invalid(recipe: Recipe, adapter: Provider):
    assert recipe.adapter.check(recipe.invalid) == []
    with pytest.raises(InvalidRequest):
        adapter.submit(recipe.invalid)


def test_a_wrong_key_is_bad_credentials_and_never_named(recipe: Recipe, sandbox_server, client: httpx.Client):
    adapter = adapter_for(recipe, sandbox_server, client, key="invalid-key-12345")
    with pytest.raises(BadCredentials) as refused:
        adapter.submit(recipe.ok)
    assert "invalid-key-12345" not in str(refused.value)


def test_an_empty_balance_is_out_of_credits(recipe: Recipe, adapter: Provider, sandbox_server):
    sandbox_server.configure(recipe.provider, credits=0)
    with pytest.raises(OutOfCredits):
        adapter.submit(recipe.ok)


def test_a_429_is_rate_limited_with_the_wait_it_names(recipe: Recipe, adapter: Provider, sandbox_server):
    sandbox_server.configure(recipe.provider, rpm=1)
    adapter.submit(recipe.ok)
    with pytest.raises(RateLimited) as limited:
        adapter.submit(with_prompt(recipe.ok, "another"))
    assert 0 < limited.value.retry_after <= 60


def test_a_documented_server_error_is_transient_and_any_other_is_a_lost_answer(recipe: Recipe, adapter: Provider):
    outcome = Transient if recipe.documents_server_errors else AnswerLost
    with pytest.raises(outcome) as raised:
        adapter.submit(with_prompt(recipe.ok, f"a cat {UPSTREAM_ERROR_TRIGGER}"))
    assert type(raised.value) is outcome


def test_a_submit_whose_answer_never_comes_is_answer_lost(recipe: Recipe, sandbox_server):
    sandbox_server.configure(recipe.provider, timeout_rate=1.0, hang_seconds=3.0)
    with httpx.Client(timeout=0.5) as short:
        adapter = adapter_for(recipe, sandbox_server, short)
        with pytest.raises(AnswerLost):
            adapter.submit(recipe.ok)


def test_nobody_listening_is_transient(recipe: Recipe):
    with httpx.Client(timeout=2) as client:
        adapter = recipe.adapter(client, account_for(recipe, recipe.base_url("http://127.0.0.1:9")), KEY)
        with pytest.raises(Transient):
            adapter.submit(recipe.ok)

