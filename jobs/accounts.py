"""Provider accounts: who genq may send requests as, and how fast.

``accounts.yaml`` names, for each account, the environment variable its key lives in; the key itself
is read only when a request is made and never kept on the account, so it cannot leak through a repr,
a log line, a task argument or the database.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.errors import ConfigError, Problem
from jobs.spec import PROVIDERS, BatchSpec


class Account(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    provider: str
    api_key_env: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    rpm: int = Field(gt=0)
    """Requests per minute this key may send, polls included (unless ``polls_count`` is false)."""
    max_in_flight: int = Field(gt=0)
    """Provider tasks this key may have running at once."""
    polls_count: bool | None = None
    """Whether this key's polls take from ``rpm``. None: they do, as for every provider by default
    (an unpublished limit may count them, and a poll past it draws a 429 and a pause); False: the
    provider is known to leave this key's polls free."""
    daily_credits: int | None = Field(default=None, gt=0)
    """Credits this key may spend a day (from midnight UTC), jobs in flight counted; None: no cap."""
    options: dict[str, str] = Field(default_factory=dict)
    """Provider-specific settings (cloudsway's endpoint path, say)."""

    def api_key(self, environ: Mapping[str, str] | None = None) -> str:
        value = (environ if environ is not None else os.environ).get(self.api_key_env, "")
        if not value:
            raise ConfigError(f"account {self.name}: environment variable {self.api_key_env} is not set")
        return value


def load_accounts(
    path: Path, *, environ: Mapping[str, str] | None = None, require_keys: bool = True
) -> dict[str, Account]:
    """Read and check the accounts file; every problem is named by account and field, none by key."""
    environ = os.environ if environ is None else environ
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no accounts file (set GENQ_ACCOUNTS to its path)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("accounts"), list):
        raise ConfigError(f"{path}: expected a mapping with a list under 'accounts'")

    accounts: dict[str, Account] = {}
    problems: list[str] = []
    for number, entry in enumerate(document["accounts"], start=1):
        label = entry.get("name") if isinstance(entry, dict) and entry.get("name") else f"#{number}"
        if not isinstance(entry, dict):
            problems.append(f"account {label}: expected a mapping")
            continue
        try:
            account = Account.model_validate(entry)
        except ValidationError as error:
            for item in error.errors():
                field = ".".join(str(part) for part in item["loc"]) or "account"
                problems.append(f"account {label}: {field}: {item['msg']}")
            continue
        if account.provider not in PROVIDERS:
            problems.append(
                f"account {label}: provider: unknown provider {account.provider!r}; known: {', '.join(PROVIDERS)}"
            )
        if account.name in accounts:
            problems.append(f"account {label}: name: used twice")
        if require_keys and not environ.get(account.api_key_env):
            problems.append(f"account {label}: environment variable {account.api_key_env} is not set")
        accounts[account.name] = account
    if problems:
        raise ConfigError(f"{path}:\n  " + "\n  ".join(problems))
    if not accounts:
        raise ConfigError(f"{path}: no accounts")
    return accounts


def routing_problems(spec: BatchSpec, accounts: Mapping[str, Account], supported: Collection[str]) -> list[Problem]:
    """Rows no configured account can serve: refused with the batch file, before anything is written."""
    providers = {account.provider for account in accounts.values()}
    problems: list[Problem] = []
    for job, line in zip(spec.jobs, spec.lines, strict=True):
        if job.provider not in supported:
            problems.append(Problem(spec.source, line, "provider", f"genq cannot drive {job.provider!r} yet"))
        elif job.account is not None:
            pinned = accounts.get(job.account)
            if pinned is None:
                problems.append(Problem(spec.source, line, "account", f"no account named {job.account!r}"))
            elif pinned.provider != job.provider:
                message = f"account {job.account!r} is a {pinned.provider} account, not {job.provider}"
                problems.append(Problem(spec.source, line, "account", message))
        elif job.provider not in providers:
            problems.append(Problem(spec.source, line, "provider", f"no account for provider {job.provider!r}"))
    return problems
