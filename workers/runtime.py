"""What a worker process holds open: the database engine, Redis, an HTTP client per account, storage,
accounts.

Built once per process after the fork (so no connection crosses a fork): a worker builds it when the
process starts (``warm``), so the first request a fresh process sends leaves as soon as its rate-limit
token is taken, not after the client, the adapter and the connections are made. It is handed to
every step function, so a step can be run in a test with a runtime of its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import httpx
import redis
from sqlalchemy import Engine

from jobs.accounts import Account, load_accounts
from jobs.checks import address_policy
from jobs.db import make_engine
from jobs.errors import ConfigError
from jobs.redisserver import client_url
from jobs.report import prepare as prepare_report
from jobs.settings import Settings
from jobs.storage import Storage
from workers.guard import GuardedTransport
from workers.providers import provider_for
from workers.providers.base import Provider
from workers.ratelimit import RateLimiter
from workers.timing import CompletionTimes

MAX_CONNECTIONS_PER_ACCOUNT = 20
"""Connections one account's client may hold open at once (keep-alive, reused by every thread)."""


class NoCookies(httpx.Cookies):
    """A jar that takes nothing from what is answered."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


class CookielessClient(httpx.Client):
    """A client that keeps no cookies: provider APIs take a key, not a session, and what a CDN sets
    has no business in the next request. It also spares every answer httpx's cookie-jar pass."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._no_cookies = NoCookies()

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, _cookies: object) -> None:
        pass


@dataclass
class Runtime:
    settings: Settings = field(default_factory=Settings)
    _clients: dict[str, httpx.Client] = field(default_factory=dict, init=False, repr=False)
    _providers: dict[str, Provider] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

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
        return RateLimiter(self.redis, margin=self.settings.rate_window_margin, spread=self.settings.rate_spread)

    @cached_property
    def timing(self) -> CompletionTimes:
        return CompletionTimes(self.redis, default=self.settings.first_poll_delay, ceiling=self.settings.max_task_age)

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.settings.resolved_storage_url())

    @cached_property
    def accounts(self) -> dict[str, Account]:
        return load_accounts(self.settings.accounts)

    @cached_property
    def http(self) -> httpx.Client:
        """For pictures: downloads go to the providers' hosts and their CDNs alike."""
        return self._new_client(max_connections=50)

    def client(self, account_name: str) -> httpx.Client:
        """The account's own client, kept alive: its connections to the provider are reused by every
        request of the account, and one provider's slow answers never hold another's connections."""
        with self._lock:
            client = self._clients.get(account_name)
            if client is None:
                client = self._clients[account_name] = self._new_client(max_connections=MAX_CONNECTIONS_PER_ACCOUNT)
            return client

    def _new_client(self, *, max_connections: int) -> httpx.Client:
        # Every request goes out through the guard: public addresses, the accounts' own and the trusted.
        policy = address_policy(self.accounts, self.settings.trusted())
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return CookielessClient(
            transport=GuardedTransport(policy, limits=limits),
            timeout=httpx.Timeout(self.settings.http_timeout, connect=min(10.0, self.settings.http_timeout)),
            follow_redirects=False,
        )

    @cached_property
    def secrets(self) -> tuple[str, ...]:
        """Every configured key: scrubbed from whatever any provider answers."""
        return tuple(sorted({key for account in self.accounts.values() if (key := account.api_key())}))

    def provider(self, account_name: str) -> Provider:
        """The account's adapter, built once: adapters keep no state between requests."""
        provider = self._providers.get(account_name)
        if provider is None:
            provider = provider_for(self.accounts[account_name], self.client(account_name))
            provider.answer_cap = self.settings.max_answer_bytes
            provider.secrets = self.secrets
            provider = self._providers.setdefault(account_name, provider)
        return provider

    def warm(self) -> None:
        """Build now what the first task would otherwise build while its token waits: the database's
        and Redis's first connections, the limiter's scripts, every account's client and adapter; and
        the report's template, which the end of the first batch would otherwise compile."""
        with self.engine.connect():
            pass
        self.redis.ping()
        self.http  # noqa: B018
        for name, account in self.accounts.items():
            try:
                account.api_key()
            except ConfigError:
                continue  # its jobs fail with that reason when they come; the others need not wait
            self.provider(name)
        prepare_report()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            self._providers = {}
        for client in clients:
            client.close()
        for name in ("http", "engine", "redis"):
            if name in self.__dict__:
                resource = self.__dict__.pop(name)
                closer = getattr(resource, "dispose", None) or resource.close
                closer()
