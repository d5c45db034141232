"""The rate limiter's behaviour, the same on each backend: a sliding log, shared by every client of
one store, paced, paused by a 429. Redis is real; the memory backend runs on a clock the test moves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from jobs.redisserver import client_url
from workers import keys
from workers.ratelimit import Backend, MemoryBackend, RateLimiter, RedisBackend, burst_limit

MakeLimiter = Callable[..., RateLimiter]


class Clock:
    """Time for the memory backend: it passes only when the test says (seconds)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """One store per test; every limiter a test makes shares it, as the workers of a fleet share Redis."""
    if request.param == "memory":
        return MemoryBackend(Clock())
    url = request.getfixturevalue("clean_redis")
    return RedisBackend(redis.Redis.from_url(client_url(url)))


@pytest.fixture
def limiter(backend: Backend) -> MakeLimiter:
    def make(spread: float = 0.0) -> RateLimiter:
        return RateLimiter(backend, spread=spread)

    return make


def test_no_more_than_rpm_requests_are_taken_in_a_minute(limiter):
    first, second = limiter(), limiter()
    taken = [first.acquire("acct", 5) == 0 for _ in range(4)] + [second.acquire("acct", 5) == 0 for _ in range(4)]
    assert taken.count(True) == 5
    assert first.available("acct", 5) == 0


def test_admission_can_look_ahead_to_requests_that_free_soon(limiter):
    rl = limiter()
    assert [rl.acquire("acct", 3) for _ in range(2)] == [0, 0]
    assert rl.available("acct", 3) == 1
    assert rl.available("acct", 3, within=30) == 1  # the two taken are still in the window then
    assert rl.available("acct", 3, within=61) == 3  # and gone by then


def test_a_refusal_says_how_long_until_a_request_frees(limiter):
    rl = limiter()
    assert rl.acquire("acct", 1) == 0
    wait = rl.acquire("acct", 1)
    assert 59 < wait <= 60


def test_many_threads_at_once_never_take_more_than_the_limit(limiter):
    rl = limiter()
    results: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(10):
            wait = rl.acquire("busy", 25)
            with lock:
                results.append(wait)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(0.0) == 25


def test_accounts_do_not_share_an_allowance(limiter):
    rl = limiter()
    assert rl.acquire("a", 1) == 0
    assert rl.acquire("b", 1) == 0


def test_a_paced_key_spends_its_minute_over_the_spread_not_at_once(limiter):
    rl = limiter(spread=10)
    assert burst_limit(120, 10) == 25  # 20 a stretch, and a quarter more to catch up a lull
    taken = [rl.acquire("acct", 120) for _ in range(30)]
    assert taken[:25] == [0] * 25
    assert all(5 < wait <= 10 for wait in taken[25:])  # when the first of the stretch leaves it
    assert rl.available("acct", 120) == 0
    assert rl.available("acct", 120, within=11) == 25  # the stretch has moved on; the minute has 95 left


def test_a_slow_key_sends_a_few_jobs_at_once_however_it_is_paced(limiter):
    rl = limiter(spread=10)
    assert [rl.acquire("acct", 10) for _ in range(10)] == [0] * 10
    assert 59 < rl.acquire("acct", 10) <= 60.5
    assert burst_limit(30, 10) == 10 and burst_limit(6, 10) == 6 and burst_limit(600, 0) == 600


def test_a_pause_stops_every_client_and_is_never_shortened(limiter):
    first, second = limiter(), limiter()
    first.pause("acct", 30, "rate limited")
    first.pause("acct", 1, "rate limited")
    wait = second.acquire("acct", 100)
    assert 29 < wait <= 30
    assert second.available("acct", 100) == 0


def test_standing_tells_requests_used_and_why_an_account_is_paused(limiter):
    rl = limiter()
    for _ in range(3):
        rl.acquire("acct", 10)
    assert rl.standing("acct").used == 3
    assert rl.standing("acct").paused_for == 0

    rl.pause("acct", 60, "the provider refused its key", out_of_rotation=True)

    standing = rl.standing("acct")
    assert 59 < standing.paused_for <= 60
    assert standing.reason == "the provider refused its key" and standing.out_of_rotation


def test_a_request_frees_a_window_after_it_was_taken():
    clock = Clock()
    rl = RateLimiter(MemoryBackend(clock), margin=0.5)
    assert [rl.acquire("acct", 2) for _ in range(2)] == [0, 0]
    clock.now += 60.4
    assert 0 < rl.acquire("acct", 2) <= 0.1  # the margin: a minute and half a second
    clock.now += 0.1
    assert rl.acquire("acct", 2) == 0
    assert rl.standing("acct").used == 1


def test_a_pause_ends_when_its_time_is_up():
    clock = Clock()
    rl = RateLimiter(MemoryBackend(clock))
    rl.pause("acct", 5, "rate limited by the provider (429)")
    clock.now += 5
    assert rl.acquire("acct", 10) == 0
    assert rl.standing("acct").reason == ""


def test_requests_are_counted_by_kind_only_when_taken(limiter):
    rl = limiter()
    assert [rl.acquire("acct", 3, kind="submit") for _ in range(2)] == [0, 0]
    assert rl.acquire("acct", 3, kind="poll") == 0
    assert rl.acquire("acct", 3, kind="poll") > 0  # refused: not a request, not counted
    assert rl.requests("acct") == {"submit": 2, "poll": 1}
    assert rl.requests("other") == {}


def test_one_dispatcher_at_a_time_holds_an_accounts_admission(limiter):
    first, second = limiter(), limiter()
    with first.admission("acct") as held:
        assert held
        with second.admission("acct") as also:
            assert not also
    with second.admission("acct") as held:
        assert held


def test_redis_time_decides_not_the_workers_clock(clean_redis, monkeypatch):
    """A worker whose clock is an hour ahead logs its request at Redis's time, in the fleet's window."""
    client = redis.Redis.from_url(client_url(clean_redis))
    skewed = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: skewed)
    rl = RateLimiter(RedisBackend(client))
    assert rl.acquire("acct", 1) == 0
    seconds, micros = client.time()  # type: ignore[misc]
    logged = client.zrange(keys.rate_log("acct"), 0, 0, withscores=True)[0][1]  # type: ignore[index]
    assert abs(logged - (seconds * 1000 + micros / 1000)) < 1000
    assert 59 < rl.acquire("acct", 1) <= 60
