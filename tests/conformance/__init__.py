"""What the conformance suite needs to know of each provider: one ``Recipe`` a module, named ``RECIPE``.

The suite (``tests/test_conformance.py``) runs the same scenarios against every adapter and its copy
in the sandbox; a recipe says only how to reach the provider and which jobs provoke what.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from jobs.spec import JobSpec
from workers.providers.base import Provider, ProviderError


@dataclass(frozen=True)
class Recipe:
    provider: str
    adapter: type[Provider]
    ok: JobSpec
    """A job that succeeds."""
    ok_images: int
    """Pictures ``ok`` makes."""
    invalid: JobSpec
    """A job the adapter's ``check`` lets through but the provider refuses as an invalid request."""
    base_url: Callable[[str], str] = lambda sandbox_url: sandbox_url
    """The account's ``base_url``, given the sandbox's base URL for this provider."""
    account_options: Mapping[str, str] = field(default_factory=dict)
    several: JobSpec | None = None
    """A job that starts several provider tasks (or pictures), if the provider has such jobs."""
    several_images: int = 0
    failing_outcome: type[ProviderError] | None = None
    """For a synchronous provider: what a failed generation raises (it has no task to poll)."""
    refuses_content: bool = False
    """Whether the provider refuses unsafe content (the sandbox's ``sandbox:unsafe`` trigger)."""
    documents_server_errors: bool = True
    """Whether the provider publishes the body of its own server error, which says nothing started
    (so it may be sent again); without one, a submit's 5xx may hide a job taken, and is lost."""


def recipes() -> list[Recipe]:
    """Every provider module's recipe, by provider name."""
    found = []
    for module in pkgutil.iter_modules(__path__):
        found.append(importlib.import_module(f"{__name__}.{module.name}").RECIPE)
    return sorted(found, key=lambda recipe: recipe.provider)
