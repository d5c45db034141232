"""Provider answers are bounded and scrubbed where they enter: a huge answer or a gzip bomb is never
read whole, and a key the provider echoes never reaches a job's reason."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from jobs.accounts import Account
from jobs.spec import JobSpec
from tests.rawhttp import RawServer, answer
from workers.providers.base import AnswerTooLarge, InvalidRequest, send
from workers.providers.gencraft import Gencraft
from workers.submission import NextStep, next_step

KEY = "sk-echoed-secret-0123456789"
CAP = 64 * 1024


def gencraft(base_url: str) -> Gencraft:
    account = Account(name="gc", provider="gencraft", api_key_env="UNUSED", base_url=base_url, rpm=60,
                      max_in_flight=4)  # fmt: skip
    adapter = Gencraft(httpx.Client(timeout=5), account, KEY)
    adapter.answer_cap = CAP
    return adapter


def gzipped(status: str, body: bytes) -> bytes:
    packed = gzip.compress(body)
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(packed)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + packed


HUGE = json.dumps({"task_ids": ["task_1"], "padding": "x" * (4 * CAP)}).encode()


@pytest.mark.parametrize(
    "raw",
    [answer("200 OK", HUGE, "application/json"), gzipped("200 OK", b'{"task_ids": ["' + b"0" * (200 * CAP) + b'"]}')],
    ids=["a huge answer", "a gzip bomb"],
)
def test_an_answer_past_the_cap_is_a_lost_submit_and_a_failed_poll(raw: bytes):
    with RawServer(raw) as server:
        adapter = gencraft(server.url)
        with pytest.raises(AnswerTooLarge) as submitted:
            adapter.submit(JobSpec(prompt="a lamp", provider="gencraft"))
        with pytest.raises(AnswerTooLarge):
            adapter.poll(["task_1", "task_2"])
    assert next_step(submitted.value) is NextStep.UNCERTAIN and "more than 65536 bytes" in str(submitted.value)


def test_a_gzipped_answer_under_the_cap_is_read_decoded():
    with RawServer(gzipped("200 OK", b'{"task_ids": ["task_7"]}')) as server:
        started = gencraft(server.url).submit(JobSpec(prompt="a lamp", provider="gencraft"))
    assert started.task_ids == ("task_7",)


def test_a_key_the_provider_echoes_is_scrubbed_before_anything_reads_it():
    body = json.dumps({"error": {"type": "invalid_request", "message": f"bad request for Bearer {KEY}"}}).encode()
    with RawServer(answer("400 Bad Request", body, "application/json")) as server:
        with pytest.raises(InvalidRequest) as refused:
            gencraft(server.url).submit(JobSpec(prompt="a lamp", provider="gencraft"))
        with httpx.Client() as client:
            raw = send(client, client.build_request("GET", server.url), paid=False, secrets=(KEY,))
    assert KEY not in str(refused.value) and "Bearer ***" in str(refused.value)
    assert KEY.encode() not in raw.content
