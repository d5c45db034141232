"""Every reason a row of a batch file cannot be sent, found before anything of it is written.

``genq submit``, ``genq run``, ``genq plan`` and the inbox all refuse a file by the same rules, and
those are the rules the workers obey when they send: an account must serve the row (``jobs.accounts``),
its provider must offer what it asks (``jobs.offers``), and every reference URL must be one genq
would fetch (``jobs.addresses``). They live in ``jobs`` so the floors that read batch files use them
without importing ``workers``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from jobs.accounts import Account, routing_problems
from jobs.addresses import AddressPolicy, check_url
from jobs.errors import DestinationRefused, Problem
from jobs.offers import CHECKS
from jobs.spec import BatchSpec


def capability_problems(spec: BatchSpec) -> list[Problem]:
    """Rows their provider cannot do as asked (a model without the mode, a prompt too long, ...)."""
    problems = []
    for job, line in zip(spec.jobs, spec.lines, strict=True):
        check = CHECKS.get(job.provider)
        for unsupported in check(job) if check is not None else ():
            problems.append(Problem(spec.source, line, unsupported.field, f"{job.provider}: {unsupported.reason}"))
    return problems


def batch_problems(spec: BatchSpec, accounts: Mapping[str, Account], *, trusted: Sequence[str] = ()) -> list[Problem]:
    """Every row that cannot be sent: no account to serve it, a provider that cannot do it as asked,
    or a reference URL genq would not fetch (``trusted``: ``GENQ_TRUSTED_HOSTS``)."""
    problems = routing_problems(spec, accounts, CHECKS) + capability_problems(spec)
    problems += reference_problems(spec, address_policy(accounts, trusted))
    return sorted(problems, key=lambda problem: problem.line or 0)


def row_checks(
    load_accounts: Callable[[], Mapping[str, Account]], *, trusted: Sequence[str] = ()
) -> Callable[[BatchSpec], list[Problem]]:
    """``batch_problems`` for a batch handed over a few rows at a time (``jobs.batchfile.open_batch``
    checks a file of any length so). The accounts are loaded when the first rows come, as they were
    after the file had been read, so a file refused for problems of its own is refused for those
    first; they are loaded once, and so is the address policy."""
    loaded: list[tuple[Mapping[str, Account], AddressPolicy]] = []

    def check(rows: BatchSpec) -> list[Problem]:
        if not loaded:
            accounts = load_accounts()
            loaded.append((accounts, address_policy(accounts, trusted)))
        accounts, policy = loaded[0]
        problems = routing_problems(rows, accounts, CHECKS) + capability_problems(rows)
        return problems + reference_problems(rows, policy)

    return check


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
