"""What a worker process holds open: the database engine, Redis, the HTTP client, storage, accounts.

Built once per process on first use (after the fork, so no connection crosses a fork), and handed
to every step function, so a step can be run in a test with a runtime of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import httpx
import redis
from sqlalchemy import Engine

from jobs.accounts import Account, load_accounts
from jobs.checks import address_policy
from jobs.db import make_engine
from jobs.redisserver import client_url
from jobs.settings import Settings
from jobs.storage import Storage
from workers.guard import GuardedTransport
from workers.providers import provider_for
from workers.providers.base import Provider
from workers.ratelimit import RateLimiter
from workers.timing import CompletionTimes


@dataclass
class Runtime:
    settings: Settings = field(default_factory=Settings)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.resolved_database_url())

    @cached_property
    def redis(self) -> redis.Redis:
        # Time-outs, so a Redis gone quiet fails a call (and stops a heartbeat) rather than hang it.
        return redis.Redis.from_url(
            client_url(self.settings.resolved_redis_url()), socket_timeout=10, socket_connect_timeout=5
        )

    @cached_property
    def limiter(self) -> RateLimiter:
        return RateLimiter(
            self.redis, margin=self.settings.rate_window_margin, spread=self.settings.rate_spread
        )

    @cached_property
    def timing(self) -> CompletionTimes:
        return CompletionTimes(
            self.redis, default=self.settings.first_poll_delay, ceiling=self.settings.max_task_age
        )

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.settings.resolved_storage_url())

    @cached_property
    def accounts(self) -> dict[str, Account]:
        return load_accounts(self.settings.accounts)

    @cached_property
    def http(self) -> httpx.Client:
        # Every request goes out through the guard: public addresses, the accounts' own and the trusted.
        policy = address_policy(self.accounts, self.settings.trusted())
        return httpx.Client(
            transport=GuardedTransport(policy, limits=httpx.Limits(max_connections=50, max_keepalive_connections=20)),
            timeout=httpx.Timeout(self.settings.http_timeout, connect=min(10.0, self.settings.http_timeout)),
            follow_redirects=False,
        )

    @cached_property
    def secrets(self) -> tuple[str, ...]:
        """Every configured key: scrubbed from whatever any provider answers."""
        return tuple(sorted({key for account in self.accounts.values() if (key := account.api_key())}))

    def provider(self, account_name: str) -> Provider:
        provider = provider_for(self.accounts[account_name], self.http)
        provider.answer_cap = self.settings.max_answer_bytes
        provider.secrets = self.secrets
        return provider

    def close(self) -> None:
        for name in ("http", "engine", "redis"):
            if name in self.__dict__:
                resource = self.__dict__.pop(name)
                closer = getattr(resource, "dispose", None) or resource.close
                closer()
