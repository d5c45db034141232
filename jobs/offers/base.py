"""What a provider cannot do, said before anything is sent.

Each provider's offer (its models, modes, aspects, counts...) is a plain function of a ``JobSpec``,
``check(spec) -> list[Unsupported]``, with no client and no account, so a batch file is refused at
load (by ``genq submit``, ``genq run`` and the inbox alike) rather than paid for and failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from jobs.spec import JobSpec


@dataclass(frozen=True)
class Unsupported:
    """A job field the provider cannot do as asked, and why; refused when the batch file is loaded."""

    field: str
    reason: str


Check = Callable[[JobSpec], list[Unsupported]]
"""One provider's offer: what of a job it cannot do, empty when it can. Sends nothing."""


def not_offered(field: str, value: str, offered: Iterable[str]) -> Unsupported:
    """A value outside a published list, with the list, so the person can pick one."""
    return Unsupported(field, f"{field} {value!r} is not offered; use one of {', '.join(offered)}")


def no_setting(provider: str, spec: JobSpec, fields: Iterable[str]) -> list[Unsupported]:
    """Each of ``fields`` the job sets though the provider has no parameter for it: refused rather
    than silently dropped, since a picture made without it is not the one asked for."""
    return [Unsupported(field, f"{provider} has no {field} setting") for field in fields
            if getattr(spec, field) not in (None, ())]  # fmt: skip
