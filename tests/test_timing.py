"""The first poll of a task comes when it is likely done: learned from the tasks that finished, as of
when their polls were due, not when they ran."""

from __future__ import annotations

import random

import redis

from jobs.redisserver import client_url
from jobs.settings import Settings
from workers.polling import follow_up_gap
from workers.providers import ADAPTERS
from workers.timing import QUANTILE, CompletionTimes

SETTINGS = Settings()


def times(redis_url: str, **options) -> CompletionTimes:
    return CompletionTimes(redis.Redis.from_url(client_url(redis_url)), **{"default": 2.0, **options})


def poll_until_done(learned: CompletionTimes, duration: float, delay: float, *, late: float = 0.0) -> bool:
    """Poll one task as the fleet does (first due at ``delay``, then follow-ups due a backoff after the
    poll before; each poll running up to ``late`` seconds after it was due, as one waiting for its
    key's allowance does), report it finished, and say whether the first poll found it done."""
    due = delay
    ran = due + random.uniform(0, late)
    if duration <= ran:
        learned.observe_finished("girlgenerator", None, due=due, previous=None)
        return True
    polls = 1
    while True:
        previous = ran
        # The follow-ups back off from the delay learned by then, as the fleet's do.
        gap = follow_up_gap(SETTINGS, polls, delay_of(learned), age=previous)
        due = previous + gap * random.uniform(0.8, 1.2)
        ran = due + random.uniform(0, late)
        if duration <= ran:
            learned.observe_finished("girlgenerator", None, due=due, previous=previous)
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


def test_with_nothing_learned_the_first_wave_is_polled_at_the_providers_typical_time(clean_redis):
    learned = times(clean_redis, default=None)

    for provider, adapter in ADAPTERS.items():
        assert learned.first_poll_delay(provider, None) == adapter.typical_seconds
    assert times(clean_redis, default=0.3).first_poll_delay("girlgenerator", None) == 0.3


def test_a_wave_of_tasks_polled_together_teaches_the_delay_without_overshooting(clean_redis):
    learned = times(clean_redis)
    random.seed(11)
    first_wave = delay_of(learned)  # a batch's tasks start together, all first polled at the default
    for _ in range(200):
        poll_until_done(learned, random.uniform(15, 25), first_wave)

    assert 22 < delay_of(learned) < 27
    second_wave = delay_of(learned)
    done = [poll_until_done(learned, random.uniform(15, 25), second_wave) for _ in range(200)]
    assert sum(done) / len(done) > 0.75  # near QUANTILE: the first wave's follow-ups are seconds apart
    assert 22 < delay_of(learned) < 27


def test_the_delay_comes_down_when_tasks_got_faster(clean_redis):
    learned = times(clean_redis)
    random.seed(3)
    for _ in range(300):
        poll_until_done(learned, random.uniform(15, 25), delay_of(learned))
    slow = delay_of(learned)
    for _ in range(1000):
        poll_until_done(learned, random.uniform(4, 6), delay_of(learned))

    # It comes down to where the new tasks' 90th percentile is (5.8 s), not below where most finish.
    assert slow > 20
    assert 5 < delay_of(learned) < 7


def test_a_seed_far_too_high_comes_down_within_a_few_waves(clean_redis):
    # Given a provider whose typical time says 30 s and whose pictures take 2 to 4 s,
    learned = times(clean_redis, default=30.0)
    random.seed(5)
    waves = 0
    while delay_of(learned) > 6 and waves < 20:
        # a batch's waves of 16 tasks, each wave first polled together at the delay learned by then,
        wave = delay_of(learned)
        for _ in range(16):
            poll_until_done(learned, random.uniform(2, 4), wave)
        waves += 1

    # it is polled near when the pictures are done within a few waves, not after hundreds of tasks.
    assert waves <= 8
    done = [poll_until_done(learned, random.uniform(2, 4), delay_of(learned)) for _ in range(400)]
    assert 3 < delay_of(learned) < 6
    assert sum(done[200:]) / 200 > 0.75


def test_polls_that_waited_for_the_allowance_do_not_make_tasks_look_slower(clean_redis):
    # A key that binds: every poll, first or follow-up, runs up to half a minute after it was due.
    learned = times(clean_redis)
    random.seed(5)
    for _ in range(800):
        poll_until_done(learned, random.uniform(3, 20), delay_of(learned), late=30.0)

    # Not above the 90th percentile of 3 to 20 s (18.3 s); below it, as polls that run late find more
    # tasks done than were done when they were due.
    assert delay_of(learned) < 19


def test_a_follow_up_is_learned_between_the_poll_that_found_it_running_and_its_own_due_time(clean_redis):
    learned = times(clean_redis)
    # Found running at 10 s, the follow-up due at 12 s ran at 40 s (waiting for the allowance).
    assert learned.observe_finished("girlgenerator", None, due=12.0, previous=10.0) == 11.0


def test_each_provider_and_model_learns_its_own_delay(clean_redis):
    learned = times(clean_redis)
    for _ in range(20):
        learned.observe_finished("gencraft", "pro", due=30.0, previous=29.0)
    assert learned.first_poll_delay("gencraft", "pro") == 29.5
    assert learned.first_poll_delay("gencraft", "flash") == 2.0
    assert learned.first_poll_delay("girlgenerator", "pro") == 2.0


def test_a_default_set_below_the_floor_is_the_floor(clean_redis):
    learned = times(clean_redis, default=0.2, floor=0.5)
    for _ in range(300):
        learned.observe_finished("gencraft", None, due=0.2, previous=None)
    assert learned.first_poll_delay("gencraft", None) == 0.2


def test_the_delay_stays_within_its_bounds(clean_redis):
    learned = times(clean_redis, floor=1.0, ceiling=30.0)
    learned.observe_finished("qtpixel", None, due=410.0, previous=390.0)
    assert learned.first_poll_delay("qtpixel", None) == 30.0
    for _ in range(300):
        learned.observe_finished("qtpixel", None, due=0.2, previous=None)
    assert learned.first_poll_delay("qtpixel", None) == 1.0
