"""Every outcome of the provider interface has a decision in each policy table, found by its class."""

from __future__ import annotations

import pytest

from workers.polling import POLL_STEP, poll_step
from workers.providers import base
from workers.providers.base import ProviderError, RateLimited
from workers.submission import NEXT_STEP, NextStep, next_step


def outcomes() -> list[type[ProviderError]]:
    found = [ProviderError]
    for cls in found:
        found += [sub for sub in cls.__subclasses__() if sub.__module__ == base.__name__]
    return found


def example(cls: type[ProviderError]) -> ProviderError:
    return cls("x", 1.0) if issubclass(cls, RateLimited) else cls("x")


@pytest.mark.parametrize("cls", outcomes(), ids=lambda cls: cls.__name__)
def test_every_outcome_has_a_submit_step_and_a_poll_step(cls: type[ProviderError]):
    assert next_step(example(cls)) in NextStep
    assert poll_step(example(cls)) in set(POLL_STEP.values())


def test_a_subclass_takes_its_parents_decision():
    class GatewayTimeout(base.AnswerLost):
        pass

    assert next_step(GatewayTimeout("x")) is NextStep.UNCERTAIN
    assert NEXT_STEP[base.Transient] is next_step(base.Unreadable("x"))
