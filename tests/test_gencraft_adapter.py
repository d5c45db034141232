"""What only the gencraft adapter does, against the sandbox over real HTTP: what ``check`` refuses
(and that the sandbox refuses the same), reference pictures through the upload endpoint, the history
and account status, and batch polls of up to 20 ids answered in the order asked.

The outcomes every adapter shares (pictures, failures, bad keys, 429, lost answers...) are pinned by
``tests/test_conformance.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

import sandbox.gencraft  # noqa: F401  (registers the provider before any server starts)
from jobs.accounts import Account
from jobs.batchfile import load_batch
from jobs.spec import JobSpec
from workers.providers.base import AnswerLost, Finished, InvalidRequest, StillRunning, TaskFailed, TaskStatus
from workers.providers.gencraft import AccountStatus, Gencraft

EXAMPLE_BATCH = Path(__file__).resolve().parent.parent / "batches" / "examples" / "gencraft.yaml"


def account(base_url: str) -> Account:
    return Account(name="gc", provider="gencraft", api_key_env="UNUSED", base_url=base_url, rpm=60, max_in_flight=4)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


@pytest.fixture
def gencraft(sandbox_server, client: httpx.Client) -> Gencraft:
    return Gencraft(client, account(sandbox_server.base_url("gencraft")), "sk-adapter")


def spec(prompt: str = "a lighthouse at dusk", **fields) -> JobSpec:
    return JobSpec(prompt=prompt, provider="gencraft", **fields)


def poll_until_done(adapter: Gencraft, task_ids: Sequence[str], timeout: float = 10) -> dict[str, TaskStatus]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = adapter.poll(task_ids)
        if not any(isinstance(s, StillRunning) for s in statuses.values()):
            return statuses
        time.sleep(0.05)
    raise AssertionError("tasks did not finish")


def finished_picture(adapter: Gencraft, **fields) -> str:
    """The URL of a picture the sandbox made: a reference it can serve itself."""
    [status] = poll_until_done(adapter, adapter.submit(spec("a red boot", **fields)).task_ids).values()
    assert isinstance(status, Finished)
    return status.images[0].url


def kinds(sandbox_server) -> list[str]:
    return [r["kind"] for r in sandbox_server.stats()["requests"]]


# What check refuses at load


REFERENCE = ("http://127.0.0.1/ref.png",)


@pytest.mark.parametrize(
    "job",
    [
        spec(),
        *(spec(model=model, count=4) for model in ("gpt-image-2", "pro", "flash2", "flash")),
        spec(model="flash", mode="edit", references=REFERENCE),
        spec(references=REFERENCE),  # no mode: sent as edit
        *(spec(aspect=aspect) for aspect in ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")),
        *(spec(size=size) for size in ("1K", "2K", "4K")),
    ],
)
def test_check_lets_through_what_the_seed_offers(job: JobSpec):
    assert Gencraft.check(job) == []


@pytest.mark.parametrize(
    ("job", "field", "reason"),
    [
        (spec(mode="fusion", references=REFERENCE), "mode", "fusion is documented, but no model supports it"),
        (spec(model="pro", mode="fusion", references=REFERENCE), "mode", "no model supports it"),
        (spec(mode="sketch"), "mode", "mode 'sketch' is not offered"),
        (spec(model="dall-e-9"), "model", "model 'dall-e-9' is not offered; use one of gpt-image-2, pro, flash2"),
        (spec(aspect="5:4"), "aspect", "aspect '5:4' is not offered"),
        (spec(size="8K"), "size", "size '8K' is not offered; use one of 1K, 2K, 4K"),
        (spec(model="flash", count=5), "count", "model flash makes at most 4 pictures"),
        (spec(count=5), "count", "model gpt-image-2 makes at most 4 pictures"),
        (spec(mode="edit"), "references", "mode edit needs at least one reference picture"),
        (spec(mode="text", references=REFERENCE), "references", "mode text takes no reference pictures"),
        (spec(seed=7), "seed", "gencraft has no seed setting"),
        (spec(style="anime"), "style", "gencraft has no style setting"),
    ],
)
def test_check_refuses_what_gencraft_cannot_do_naming_the_field(job: JobSpec, field: str, reason: str):
    [problem] = Gencraft.check(job)

    assert problem.field == field
    assert reason in problem.reason


@pytest.mark.parametrize(
    "job",
    [
        *(spec(model=model, count=count) for model in ("gpt-image-2", "pro", "flash2", "flash") for count in (4, 5)),
        spec(mode="fusion"),
        spec(model="flash2", mode="fusion"),
        spec(model="dall-e-9"),
        spec(aspect="21:9"),
        spec(aspect="5:4"),
        spec(size="4K"),
        spec(size="8K"),
        spec(mode="edit"),
    ],
    ids=str,
)
def test_what_check_lets_through_the_sandbox_takes_and_what_it_refuses_the_sandbox_refuses(
    gencraft: Gencraft, job: JobSpec
):
    if Gencraft.check(job):
        with pytest.raises(InvalidRequest, match="invalid_request"):
            gencraft.submit(job)
    else:
        assert len(gencraft.submit(job).task_ids) == job.count


# Reference pictures, through the upload endpoint


def test_an_edit_uploads_its_reference_first_and_sends_the_uploaded_url(gencraft: Gencraft, sandbox_server):
    source = finished_picture(gencraft)
    earlier = len(kinds(sandbox_server))

    started = gencraft.submit(spec("the same boot in blue", model="pro", mode="edit", references=(source,)))

    # The provider fetches the source (a download from the sandbox itself) while answering the upload.
    assert kinds(sandbox_server)[earlier:] == ["download", "upload", "submit"]
    item = gencraft.history().items[0]
    [uploaded] = item.refs
    assert uploaded != source and "/gencraft/files/up_" in uploaded
    assert httpx.get(uploaded).content == httpx.get(source).content
    [status] = poll_until_done(gencraft, started.task_ids).values()
    assert isinstance(status, Finished)


def test_every_reference_is_uploaded_and_a_job_without_a_mode_is_sent_as_edit(gencraft: Gencraft):
    references = (finished_picture(gencraft, aspect="1:1"), finished_picture(gencraft, aspect="16:9"))

    gencraft.submit(spec("both boots together", references=references))

    newest = gencraft.history().items[0]
    assert (newest.prompt, newest.mode, len(newest.refs)) == ("both boots together", "edit", 2)
    assert set(newest.refs).isdisjoint(references)


def test_a_reference_the_provider_cannot_fetch_is_refused_and_nothing_is_generated(gencraft: Gencraft, sandbox_server):
    missing = f"{sandbox_server.url}/_sandbox/samples/cat.txt"

    with pytest.raises(InvalidRequest, match="source_url answered HTTP 404"):
        gencraft.submit(spec(mode="edit", references=(missing,)))

    assert kinds(sandbox_server) == ["upload"]


def test_the_upload_is_counted_as_a_request_of_the_job():
    cost = Gencraft.cost(spec(count=2, references=("http://127.0.0.1/a.png", "http://127.0.0.1/b.png")))

    assert (cost.requests, cost.tasks, cost.pictures, cost.credits) == (3, 2, 2, 2)


# History and account status


def test_history_pages_the_accounts_submits_newest_first(gencraft: Gencraft):
    before = time.time()
    gencraft.submit(spec("first", model="flash", aspect="3:4"))
    second = gencraft.submit(spec("second", count=2, size="1K"))
    poll_until_done(gencraft, second.task_ids)

    page = gencraft.history(page=1, limit=1)
    older = gencraft.history(page=2, limit=1)

    assert (page.total, page.page, page.limit, page.total_pages) == (2, 1, 1, 2)
    [newest] = page.items
    assert (newest.prompt, newest.model, newest.mode, newest.image_size, newest.image_count) == (
        "second", "gpt-image-2", "text", "1K", 2
    )  # fmt: skip
    assert len(newest.images) == 2 and newest.refs == ()
    assert newest.id.startswith("tsk_img_")
    assert before - 1 <= newest.created_at <= time.time() + 1
    [oldest] = older.items
    assert (oldest.prompt, oldest.model, oldest.aspect) == ("first", "flash", "3:4")


def test_a_submit_whose_answer_was_lost_can_be_found_in_the_history(sandbox_server):
    sandbox_server.configure("gencraft", timeout_rate=1.0, hang_seconds=3.0)
    with httpx.Client(timeout=0.5) as client:
        adapter = Gencraft(client, account(sandbox_server.base_url("gencraft")), "sk-adapter")
        with pytest.raises(AnswerLost):
            adapter.submit(spec("did this go through?"))

        assert [item.prompt for item in adapter.history().items] == ["did this go through?"]


def test_a_history_page_over_the_documented_limit_is_invalid(gencraft: Gencraft):
    with pytest.raises(InvalidRequest, match="limit must be at most 50"):
        gencraft.history(limit=51)


def test_user_status_names_the_account_its_tier_and_whether_it_has_a_key(gencraft: Gencraft, sandbox_server):
    status = gencraft.user_status()

    assert isinstance(status, AccountStatus)
    assert status.email.endswith("@example.com") and status.tier == "pro" and status.has_key is True
    assert kinds(sandbox_server) == ["status"]


# Batch polls


def test_a_batch_poll_maps_each_answer_to_the_id_in_its_place(gencraft: Gencraft):
    ok = gencraft.submit(spec(count=3)).task_ids
    [failed] = gencraft.submit(spec("a storm sandbox:fail")).task_ids
    asked = [ok[2], failed, ok[0], ok[1]]

    statuses = gencraft.poll(asked)

    assert list(statuses) == asked
    assert isinstance(statuses[failed], TaskFailed)
    for task_id in ok:
        status = statuses[task_id]
        assert isinstance(status, Finished) and status.images[0].url.endswith(f"/{task_id}.png")


def test_twenty_tasks_are_one_poll_request_and_twenty_one_ids_are_refused(gencraft: Gencraft, sandbox_server):
    task_ids = [task_id for _ in range(5) for task_id in gencraft.submit(spec(count=4)).task_ids]
    assert len(task_ids) == Gencraft.batch_poll_size == 20

    statuses = gencraft.poll(task_ids)

    assert all(isinstance(s, Finished) for s in statuses.values())
    assert kinds(sandbox_server).count("poll_many") == 1
    with pytest.raises(InvalidRequest, match="At most 20 ids"):
        gencraft.poll([*task_ids, "task_one_more"])


# The example batch


def test_the_example_batch_passes_check_and_every_job_makes_its_pictures(gencraft: Gencraft):
    batch = load_batch(EXAMPLE_BATCH)
    assert {job.model for job in batch.jobs} >= {"flash", "pro"} and any(job.count == 2 for job in batch.jobs)

    for job in batch.jobs:
        assert Gencraft.check(job) == []
        statuses = poll_until_done(gencraft, gencraft.submit(job).task_ids)
        assert len(statuses) == job.count
        assert all(isinstance(s, Finished) for s in statuses.values())
