"""One exception tree: every exception genq defines descends from ``GenqError``, at most three levels
down, and every httpx request error is translated at the boundary into a provider outcome."""

from __future__ import annotations

import importlib
import pkgutil

import httpx
import pytest

import jobs
import workers
from jobs.errors import AnswerLost, GenqError, Transient
from workers.providers.base import NOT_SENT, send


def project_exceptions() -> list[type[BaseException]]:
    found = []
    for package in (jobs, workers):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if ".migrations" in module.name:
                continue
            loaded = importlib.import_module(module.name)
            for value in vars(loaded).values():
                if (isinstance(value, type) and issubclass(value, BaseException)
                        and value.__module__.startswith(("jobs", "workers"))):  # fmt: skip
                    found.append(value)
    return sorted(set(found), key=lambda cls: cls.__qualname__)


@pytest.mark.parametrize("cls", project_exceptions(), ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_project_exception_is_in_the_tree_at_most_three_levels_down(cls: type[BaseException]):
    assert issubclass(cls, GenqError)
    assert cls.__mro__.index(GenqError) <= 2


def request_errors() -> list[type[httpx.RequestError]]:
    found: list[type[httpx.RequestError]] = []
    pending: list[type[httpx.RequestError]] = [httpx.RequestError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending += cls.__subclasses__()
    return found


@pytest.mark.parametrize("paid", [True, False], ids=["paid", "unpaid"])
@pytest.mark.parametrize("cls", request_errors(), ids=lambda cls: cls.__name__)
def test_every_httpx_request_error_becomes_a_provider_outcome(cls: type[httpx.RequestError], paid: bool):
    def fail(request: httpx.Request) -> httpx.Response:
        raise cls("boom", request=request)

    client = httpx.Client(transport=httpx.MockTransport(fail))
    with pytest.raises((Transient, AnswerLost)) as raised:
        send(client, client.build_request("POST", "http://provider.test/generate"), paid=paid)

    before_sending = issubclass(cls, NOT_SENT)
    expected = AnswerLost if paid and not before_sending else Transient
    assert type(raised.value) is expected
