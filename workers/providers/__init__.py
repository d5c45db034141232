"""Provider adapters, one module each, behind the interface in ``base``."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from jobs.accounts import Account, routing_problems
from jobs.errors import Problem
from jobs.spec import BatchSpec
from workers.providers.base import Provider
from workers.providers.cloudsway import Cloudsway
from workers.providers.gencraft import Gencraft
from workers.providers.girlgenerator import Girlgenerator
from workers.providers.qtpixel import Qtpixel
from workers.providers.talecraft import Talecraft

ADAPTERS: dict[str, type[Provider]] = {
    cls.name: cls for cls in (Cloudsway, Gencraft, Girlgenerator, Qtpixel, Talecraft)
}


def adapter_class(provider: str) -> type[Provider]:
    try:
        return ADAPTERS[provider]
    except KeyError:
        raise NotImplementedError(f"genq has no adapter for provider {provider!r} yet") from None


def provider_for(account: Account, client: httpx.Client) -> Provider:
    return adapter_class(account.provider)(client, account, account.api_key())


def capability_problems(spec: BatchSpec) -> list[Problem]:
    """Rows their provider cannot do as asked (a model without the mode, a prompt too long, ...)."""
    problems = []
    for job, line in zip(spec.jobs, spec.lines, strict=True):
        adapter = ADAPTERS.get(job.provider)
        for unsupported in adapter.check(job) if adapter is not None else ():
            problems.append(Problem(spec.source, line, unsupported.field, f"{job.provider}: {unsupported.reason}"))
    return problems


def batch_problems(spec: BatchSpec, accounts: Mapping[str, Account]) -> list[Problem]:
    """Every row that cannot be sent: no account to serve it, or a provider that cannot do it as asked."""
    problems = routing_problems(spec, accounts, ADAPTERS) + capability_problems(spec)
    return sorted(problems, key=lambda problem: problem.line or 0)
