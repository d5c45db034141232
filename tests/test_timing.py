"""The first poll of a task comes when it is likely done: learned from whether first polls found it done."""

from __future__ import annotations

import random

import redis

from jobs.redisserver import client_url
from workers.timing import QUANTILE, CompletionTimes


def times(redis_url: str, **options) -> CompletionTimes:
    return CompletionTimes(redis.Redis.from_url(client_url(redis_url)), default=2.0, **options)


def test_the_first_poll_delay_settles_where_most_tasks_are_done(clean_redis):
    learned = times(clean_redis)
    draw = random.Random(7)
    done_at_first_poll = []
    for n in range(600):
        duration = draw.uniform(15, 25)  # 20 s +- 5 s
        delay = learned.first_poll_delay("girlgenerator", None)
        done = duration <= delay
        learned.observe_first_poll("girlgenerator", None, done=done)
        if n >= 300:
            done_at_first_poll.append(done)

    assert 22 < learned.first_poll_delay("girlgenerator", None) < 26.5  # the 90th percentile is 24
    share = sum(done_at_first_poll) / len(done_at_first_poll)
    assert abs(share - QUANTILE) < 0.06


def test_each_provider_and_model_learns_its_own_delay(clean_redis):
    learned = times(clean_redis)
    for _ in range(60):
        learned.observe_first_poll("gencraft", "pro", done=False)
    assert learned.first_poll_delay("gencraft", "pro") > 10
    assert learned.first_poll_delay("gencraft", "flash") == 2.0
    assert learned.first_poll_delay("girlgenerator", "pro") == 2.0


def test_the_delay_stays_within_its_bounds(clean_redis):
    learned = times(clean_redis, floor=1.0, ceiling=30.0)
    for _ in range(400):
        learned.observe_first_poll("qtpixel", None, done=False)
    assert learned.first_poll_delay("qtpixel", None) == 30.0
    for _ in range(8000):
        learned.observe_first_poll("qtpixel", None, done=True)
    assert learned.first_poll_delay("qtpixel", None) == 1.0
