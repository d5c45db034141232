"""Each provider's offer is one rule, read in two places: ``jobs.offers`` refuses a batch file at
load, and the adapter in ``workers.providers`` answers ``check`` with the same offer, so a row that
loads is never one the adapter would refuse, and the other way round."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.offers import CHECKS
from jobs.spec import PROVIDERS, JobSpec
from workers.providers import ADAPTERS

ASKED: list[dict[str, Any]] = [
    {},
    {"aspect": "16:9"},
    {"aspect": "5:4", "count": 9},
    {"model": "no-such-model", "mode": "fusion"},
    {"mode": "image-to-image", "references": ("https://example.com/a.png",)},
    {"references": ("https://example.com/a.png",)},
    {"size": "8K", "seed": 7, "steps": 99, "style": "anime", "background": "pink", "sprite": "dance"},
    {"sprite": "walk", "count": 3},
    {"prompt": "x" * 2001},
]
"""Jobs that some provider takes and some refuse, field by field."""


def test_every_provider_genq_knows_has_an_offer_and_an_adapter() -> None:
    assert set(CHECKS) == set(PROVIDERS) == set(ADAPTERS)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fields", ASKED, ids=range(len(ASKED)))
def test_the_adapter_refuses_what_the_offer_refuses(provider: str, fields: dict[str, Any]) -> None:
    job = JobSpec(provider=provider, **{"prompt": "a lighthouse"} | fields)

    assert ADAPTERS[provider].check(job) == CHECKS[provider](job)
