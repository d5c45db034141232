"""Every Redis key genq writes, in one place. A deployment may share a Redis: all start ``genq:``."""

from __future__ import annotations

PREFIX = "genq"


def rate_log(account: str) -> str:
    """A sorted set of this account's requests in the last minute, scored by Redis time (ms)."""
    return f"{PREFIX}:rate:{account}:log"


def rate_pause(account: str) -> str:
    """Present while the account is paused for the whole fleet (after a 429); its TTL is the wait."""
    return f"{PREFIX}:rate:{account}:pause"


def rate_requests(account: str) -> str:
    """A hash of this account's requests ever taken from its allowance, by kind (``submit``, ``poll``):
    the counters ``genq metrics`` shows. Never expires; a Redis restarted empty starts them again."""
    return f"{PREFIX}:rate:{account}:requests"


def kick(name: str) -> str:
    """A short-lived marker that debounces wake-ups of a periodic task."""
    return f"{PREFIX}:kick:{name}"


def first_poll() -> str:
    """A hash of the learned first-poll delay (seconds), by ``provider:model``."""
    return f"{PREFIX}:timing:first-poll"


def completions(field: str) -> str:
    """A list of the latest finished tasks' completion times (seconds) of one ``provider:model``."""
    return f"{PREFIX}:timing:completions:{field}"


def heartbeat(holder: str) -> str:
    """Present while the worker process ``holder`` is alive; its TTL is a heartbeat's life."""
    return f"{PREFIX}:alive:{holder}"


def admission(account: str) -> str:
    """Held by the one dispatcher admitting jobs to this account now; its TTL bounds a crashed round."""
    return f"{PREFIX}:admit:{account}"
