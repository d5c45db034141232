"""The rate limiter against real Redis: a sliding log, shared by every client, paused by a 429."""

from __future__ import annotations

import threading

import redis

from jobs.redisserver import client_url
from workers.ratelimit import RateLimiter, burst_limit


def limiter(url: str, spread: float = 0.0) -> RateLimiter:
    return RateLimiter(redis.Redis.from_url(client_url(url)), spread=spread)


def test_no_more_than_rpm_requests_are_taken_in_a_minute(clean_redis):
    first, second = limiter(clean_redis), limiter(clean_redis)
    taken = [first.acquire("acct", 5) == 0 for _ in range(4)] + [second.acquire("acct", 5) == 0 for _ in range(4)]
    assert taken.count(True) == 5
    assert first.available("acct", 5) == 0


def test_admission_can_look_ahead_to_requests_that_free_soon(clean_redis):
    rl = limiter(clean_redis)
    assert [rl.acquire("acct", 3) for _ in range(2)] == [0, 0]
    assert rl.available("acct", 3) == 1
    assert rl.available("acct", 3, within=30) == 1  # the two taken are still in the window then
    assert rl.available("acct", 3, within=61) == 3  # and gone by then


def test_a_refusal_says_how_long_until_a_request_frees(clean_redis):
    rl = limiter(clean_redis)
    assert rl.acquire("acct", 1) == 0
    wait = rl.acquire("acct", 1)
    assert 59 < wait <= 60


def test_many_threads_at_once_never_take_more_than_the_limit(clean_redis):
    rl = limiter(clean_redis)
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


def test_accounts_do_not_share_an_allowance(clean_redis):
    rl = limiter(clean_redis)
    assert rl.acquire("a", 1) == 0
    assert rl.acquire("b", 1) == 0


def test_a_paced_key_spends_its_minute_over_the_spread_not_at_once(clean_redis):
    rl = limiter(clean_redis, spread=10)
    assert burst_limit(120, 10) == 25  # 20 a stretch, and a quarter more to catch up a lull
    taken = [rl.acquire("acct", 120) for _ in range(30)]
    assert taken[:25] == [0] * 25
    assert all(5 < wait <= 10 for wait in taken[25:])  # when the first of the stretch leaves it
    assert rl.available("acct", 120) == 0
    assert rl.available("acct", 120, within=11) == 25  # the stretch has moved on; the minute has 95 left


def test_a_slow_key_sends_a_few_jobs_at_once_however_it_is_paced(clean_redis):
    rl = limiter(clean_redis, spread=10)
    assert [rl.acquire("acct", 10) for _ in range(10)] == [0] * 10
    assert 59 < rl.acquire("acct", 10) <= 60.5
    assert burst_limit(30, 10) == 10 and burst_limit(6, 10) == 6 and burst_limit(600, 0) == 600


def test_a_pause_stops_every_client_and_is_never_shortened(clean_redis):
    first, second = limiter(clean_redis), limiter(clean_redis)
    first.pause("acct", 30, "rate limited")
    first.pause("acct", 1, "rate limited")
    wait = second.acquire("acct", 100)
    assert 29 < wait <= 30
    assert second.available("acct", 100) == 0


def test_standing_tells_requests_used_and_why_an_account_is_paused(clean_redis):
    rl = limiter(clean_redis)
    for _ in range(3):
        rl.acquire("acct", 10)
    assert rl.standing("acct").used == 3
    assert rl.standing("acct").paused_for == 0

    rl.pause("acct", 60, "the provider refused its key", out_of_rotation=True)

    standing = rl.standing("acct")
    assert 59 < standing.paused_for <= 60
    assert standing.reason == "the provider refused its key" and standing.out_of_rotation
