"""Provider adapters, one module each, behind the interface in ``base``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from jobs.accounts import Account, routing_problems
from jobs.errors import Problem
from jobs.spec import BatchSpec
from workers.guard import AddressPolicy, DestinationRefused, check_url
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


def batch_problems(
    spec: BatchSpec, accounts: Mapping[str, Account], *, trusted: Sequence[str] = ()
) -> list[Problem]:
    """Every row that cannot be sent: no account to serve it, a provider that cannot do it as asked,
    or a reference URL genq would not fetch (``trusted``: ``GENQ_TRUSTED_HOSTS``)."""
    problems = routing_problems(spec, accounts, ADAPTERS) + capability_problems(spec)
    problems += reference_problems(spec, address_policy(accounts, trusted))
    return sorted(problems, key=lambda problem: problem.line or 0)


def address_policy(accounts: Mapping[str, Account], trusted: Sequence[str] = ()) -> AddressPolicy:
    """Where genq may fetch from: public addresses, and each account's own host:port and ``trusted``."""
    return AddressPolicy(base_urls=[account.base_url for account in accounts.values()], trusted=trusted)


def reference_problems(spec: BatchSpec, policy: AddressPolicy) -> list[Problem]:
    """Reference URLs refused at load, by the rule every fetch follows: the provider fetches them on
    our word (gencraft's upload), and a private address in one is a request into our network."""
    problems = []
    verdicts: dict[str, str | None] = {}
    for job, line in zip(spec.jobs, spec.lines, strict=True):
        for url in job.references:
            if url not in verdicts:
                try:
                    check_url(url, policy)
                    verdicts[url] = None
                except DestinationRefused as error:
                    verdicts[url] = str(error)
            if verdicts[url] is not None:
                problems.append(Problem(spec.source, line, "references", f"{url!r} is refused: {verdicts[url]}"))
    return problems
