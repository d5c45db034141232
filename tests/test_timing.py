"""The first poll of a task comes when it is likely done: learned from the tasks that finished."""

from __future__ import annotations

import random

import redis

from jobs.redisserver import client_url
from jobs.settings import Settings
from workers.polling import follow_up_gap
from workers.timing import QUANTILE, CompletionTimes

SETTINGS = Settings()


def times(redis_url: str, **options) -> CompletionTimes:
    return CompletionTimes(redis.Redis.from_url(client_url(redis_url)), default=2.0, **options)


def poll_until_done(learned: CompletionTimes, duration: float, delay: float, *, late: float = 0.0) -> bool:
    """Poll one task as the fleet does (first at ``delay``, arriving up to ``late`` seconds after it,
    then follow-ups), report it finished, and say whether the first poll found it done."""
    elapsed = delay + random.uniform(0, late)
    if duration <= elapsed:
        learned.observe_finished("girlgenerator", None, elapsed=elapsed, at_first_poll=True)
        return True
    polls = 1
    while True:
        gap = follow_up_gap(SETTINGS, polls, delay)
        elapsed += gap * random.uniform(0.8, 1.2)
        if duration <= elapsed:
            learned.observe_finished("girlgenerator", None, elapsed=elapsed, at_first_poll=False, gap=gap)
            return False
        polls += 1


def delay_of(learned: CompletionTimes) -> float:
    return learned.first_poll_delay("girlgenerator", None)


def test_the_first_poll_delay_settles_where_most_tasks_are_done(clean_redis):
    learned = times(clean_redis)
    random.seed(7)
    done_at_first_poll = [poll_until_done(learned, random.uniform(15, 25), delay_of(learned)) for _ in range(800)]

    assert 22 < delay_of(learned) < 26  # the 90th percentile of 20 s +- 5 s is 24
    later = done_at_first_poll[400:]
    assert abs(sum(later) / len(later) - QUANTILE) < 0.06


def test_a_wave_of_tasks_polled_together_teaches_the_delay_without_overshooting(clean_redis):
    learned = times(clean_redis)
    random.seed(11)
    first_wave = delay_of(learned)  # a batch's tasks start together, all first polled at the default
    for _ in range(200):
        poll_until_done(learned, random.uniform(15, 25), first_wave)

    assert 22 < delay_of(learned) < 27
    second_wave = delay_of(learned)
    done = [poll_until_done(learned, random.uniform(15, 25), second_wave) for _ in range(200)]
    assert sum(done) / len(done) > 0.8
    assert 22 < delay_of(learned) < 27


def test_the_delay_comes_down_when_tasks_got_faster(clean_redis):
    learned = times(clean_redis)
    random.seed(3)
    for _ in range(300):
        poll_until_done(learned, random.uniform(15, 25), delay_of(learned))
    slow = delay_of(learned)
    for _ in range(1000):
        poll_until_done(learned, random.uniform(4, 6), delay_of(learned))

    # Each window of tasks found done at their first poll moves it down by EARLY_SHARE at most:
    # it comes down steadily, never below where the tasks finish.
    assert 6 < delay_of(learned) < 0.85 * slow


def test_polls_that_waited_for_the_rate_limit_do_not_make_tasks_look_slower(clean_redis):
    learned = times(clean_redis)
    random.seed(5)
    for _ in range(800):
        poll_until_done(learned, random.uniform(15, 25), delay_of(learned), late=5.0)

    assert delay_of(learned) < 26


def test_each_provider_and_model_learns_its_own_delay(clean_redis):
    learned = times(clean_redis)
    for _ in range(20):
        learned.observe_finished("gencraft", "pro", elapsed=30.0, at_first_poll=False, gap=1.0)
    assert learned.first_poll_delay("gencraft", "pro") == 29.5
    assert learned.first_poll_delay("gencraft", "flash") == 2.0
    assert learned.first_poll_delay("girlgenerator", "pro") == 2.0


def test_the_delay_stays_within_its_bounds(clean_redis):
    learned = times(clean_redis, floor=1.0, ceiling=30.0)
    learned.observe_finished("qtpixel", None, elapsed=400.0, at_first_poll=False, gap=10.0)
    assert learned.first_poll_delay("qtpixel", None) == 30.0
    for _ in range(300):
        learned.observe_finished("qtpixel", None, elapsed=0.2, at_first_poll=True)
    assert learned.first_poll_delay("qtpixel", None) == 1.0
