"""Provider adapters, one module each, behind the interface in ``base``.

What each provider can do is its offer in ``jobs.offers``; the checks a batch file goes through are
in ``jobs.checks`` (re-exported here), below ``workers``, so the floors that read batch files use them.
"""

from __future__ import annotations

import httpx

from jobs.accounts import Account
from jobs.checks import address_policy, batch_problems, capability_problems, reference_problems
from workers.providers.base import Provider
from workers.providers.cloudsway import Cloudsway
from workers.providers.gencraft import Gencraft
from workers.providers.girlgenerator import Girlgenerator
from workers.providers.qtpixel import Qtpixel
from workers.providers.talecraft import Talecraft

__all__ = [
    "ADAPTERS", "adapter_class", "address_policy", "batch_problems", "capability_problems", "provider_for",
    "reference_problems",
]  # fmt: skip

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
