"""How the fake providers behave: latency, failures, server errors, lost answers, rate limits, credits,
picture size.

Frozen pydantic models, so a config can be handed to a server thread and changed only by building a
new one (``PUT /_sandbox/config/{provider}`` does exactly that, with validation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "GENQ_SANDBOX_"


class ProviderConfig(BaseModel):
    """How one provider behaves towards every key; the zero values make a fast, perfect provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_mean: float = Field(default=0.0, ge=0)
    """Seconds a generation takes, on average."""
    latency_jitter: float = Field(default=0.0, ge=0)
    """Seconds either side of the mean; each task draws its duration uniformly in mean ± jitter."""
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    """Fraction of tasks that end failed (as if the model were overloaded)."""
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    """Fraction of submit requests whose answer is held back ``hang_seconds``: the work is done, the
    answer comes too late for any client, which is how a paid submit's answer gets lost."""
    hang_seconds: float = Field(default=30.0, ge=0)
    """Seconds a held-back answer waits before it is sent."""
    error_rate: float = Field(default=0.0, ge=0, le=1)
    """Fraction of submit requests (of those that pass validation) answered with the provider's own
    server error, as the ``sandbox:upstream_error`` prompt does: nothing started, nothing charged. The
    retryable failure a client must survive without a prompt made to ask for it."""
    gateway_rate: float = Field(default=0.0, ge=0, le=1)
    """Fraction of successful submits whose answer the client gets as a gateway's 502 HTML page instead:
    the work is started, charged and recorded, only the answer is lost on its way back. Unlike
    ``timeout_rate`` the client learns at once that something broke, yet not whether it was paid for.
    Any 2xx submit answer is replaced, qtpixel's ``duplicates_found`` (which started nothing) included."""
    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute per key over a sliding 60 s window; None is unlimited. Past it: 429."""
    credits: int | None = Field(default=None, ge=0)
    """Credits each key starts with (one picture costs one); None is unlimited."""


PROVIDER_DEFAULTS: dict[str, dict[str, Any]] = {"girlgenerator": {"rpm": 10}}
"""What a provider's documentation fixes, over ``defaults``, when it is not named in ``providers``:
girlgenerator allows 10 requests per minute per key, polls included."""


class SandboxConfig(BaseModel):
    """The whole farm: a config per provider, and what is common to all of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    """Per provider id; a provider missing here behaves as ``defaults``."""
    defaults: ProviderConfig = ProviderConfig()
    """The behaviour of every provider not named in ``providers``."""
    image_long_side: int | None = Field(default=None, ge=8)
    """None draws pictures at the documented size (e.g. gencraft 2K: 2048 px on the long side); a
    number draws them this many pixels on the long side, same aspect, so tests stay fast."""
    invalid_key_prefix: str = Field(default="invalid", min_length=1)
    """A key starting with this is refused as an invalid key; any other non-empty key is an account."""
    seed: int | None = None
    """Seeds the draws of latency, failure, time-out, server error and gateway page, for runs that
    repeat exactly."""

    def provider(self, name: str) -> ProviderConfig:
        if name in self.providers:
            return self.providers[name]
        documented = PROVIDER_DEFAULTS.get(name)
        return self.defaults.model_copy(update=documented) if documented else self.defaults

    def with_provider(self, name: str, changes: Mapping[str, Any]) -> SandboxConfig:
        """A copy with ``changes`` applied to one provider's config; raises ``pydantic.ValidationError``."""
        updated = ProviderConfig.model_validate({**self.provider(name).model_dump(), **changes})
        return self.model_copy(update={"providers": {**self.providers, name: updated}})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxConfig:
        """Read ``GENQ_SANDBOX_*``; the provider settings apply to every provider.

        ``LATENCY`` (mean seconds), ``JITTER`` (seconds), ``FAILURE_RATE``, ``TIMEOUT_RATE``,
        ``ERROR_RATE``, ``GATEWAY_RATE`` (fractions), ``HANG_SECONDS``, ``RPM``, ``CREDITS``, ``IMAGE_SIDE``
        (pixels), ``INVALID_KEY_PREFIX``, ``SEED``.
        """
        env = os.environ if environ is None else environ
        provider_fields: dict[str, tuple[str, Callable[[str], Any]]] = {
            "LATENCY": ("latency_mean", float),
            "JITTER": ("latency_jitter", float),
            "FAILURE_RATE": ("failure_rate", float),
            "TIMEOUT_RATE": ("timeout_rate", float),
            "ERROR_RATE": ("error_rate", float),
            "GATEWAY_RATE": ("gateway_rate", float),
            "HANG_SECONDS": ("hang_seconds", float),
            "RPM": ("rpm", int),
            "CREDITS": ("credits", int),
        }
        defaults = {
            field: parse(env[ENV_PREFIX + name])
            for name, (field, parse) in provider_fields.items()
            if env.get(ENV_PREFIX + name)
        }
        top: dict[str, Any] = {"defaults": ProviderConfig.model_validate(defaults)}
        if env.get(ENV_PREFIX + "IMAGE_SIDE"):
            top["image_long_side"] = int(env[ENV_PREFIX + "IMAGE_SIDE"])
        if env.get(ENV_PREFIX + "INVALID_KEY_PREFIX"):
            top["invalid_key_prefix"] = env[ENV_PREFIX + "INVALID_KEY_PREFIX"]
        if env.get(ENV_PREFIX + "SEED"):
            top["seed"] = int(env[ENV_PREFIX + "SEED"])
        return cls.model_validate(top)
