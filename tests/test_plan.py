"""genq plan: requests, credits and time, counted by the rules the fleet runs by, before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.accounts import Account
from jobs.batchfile import parse_batch
from tests.test_cli import genq, rows
from workers.plan import plan_batch


def account(name: str, provider: str, rpm: int, max_in_flight: int = 4, polls_count: bool | None = None) -> Account:
    return Account(name=name, provider=provider, api_key_env="K", base_url="http://x", rpm=rpm,
                   max_in_flight=max_in_flight, polls_count=polls_count)  # fmt: skip


def test_a_rate_bound_batch_takes_as_long_as_its_submits_at_the_accounts_limits():
    spec = parse_batch(("prompt,provider\n" + "a cat,gencraft\n" * 100).encode(), "cats.csv")
    accounts = {
        name: account(name, "gencraft", rpm=10, max_in_flight=50, polls_count=False) for name in ("gc-1", "gc-2")
    }

    plan = plan_batch(spec, accounts, lambda provider, model: 20.0)

    [gencraft] = plan.providers
    assert (gencraft.submits, gencraft.polls, gencraft.credits) == (100, 6, 100)  # polls of up to 20 ids
    assert gencraft.limited_requests == 100  # these keys' polls are free
    # A minute's 20 at once, the other 80 at 20 a minute, then one generation.
    assert plan.seconds == 60 * 80 / 20 + 20


def test_gencraft_polls_spend_the_allowance_unless_the_accounts_say_they_are_free():
    spec = parse_batch(("prompt,provider\n" + "a cat,gencraft\n" * 100).encode(), "cats.csv")
    accounts = {name: account(name, "gencraft", rpm=10, max_in_flight=50) for name in ("gc-1", "gc-2")}

    plan = plan_batch(spec, accounts, lambda provider, model: 20.0)

    [gencraft] = plan.providers
    # The keys bind: polls of 20 ids, and for the tenth not done at their first poll one follow-up
    # each, which waits its turn and finds them done: 6 polls, counted.
    assert (gencraft.submits, gencraft.polls, gencraft.limited_requests) == (100, 6, 106)
    assert plan.seconds == 60 * 86 / 20 + 20


def test_a_paced_key_sends_no_more_at_once_than_its_pace_allows():
    spec = parse_batch(("prompt,provider\n" + "a cat,gencraft\n" * 265).encode(), "cats.csv")
    accounts = {"gc": account("gc", "gencraft", rpm=120, max_in_flight=200, polls_count=False)}

    paced = plan_batch(spec, accounts, lambda provider, model: 20.0, spread=10)
    burst = plan_batch(spec, accounts, lambda provider, model: 20.0, spread=0)

    # 25 at once (20 a 10-second stretch and a quarter), not 120; the other 240 at 120 a minute.
    assert paced.seconds == 60 * 240 / 120 + 20
    assert burst.seconds == 60 * 145 / 120 + 20  # a whole minute's 120 at once


def test_follow_ups_that_wait_their_turn_in_a_spent_allowance_find_their_tasks_done():
    spec = parse_batch(("prompt,provider\n" + "a cat,girlgenerator\n" * 100).encode(), "cats.csv")

    [rate_bound] = plan_batch(spec, {"gg": account("gg", "girlgenerator", rpm=10, max_in_flight=50)},
                              lambda p, m: 20.0).providers  # fmt: skip
    [slot_bound] = plan_batch(spec, {"gg": account("gg", "girlgenerator", rpm=600, max_in_flight=2)},
                              lambda p, m: 20.0).providers  # fmt: skip

    assert rate_bound.polls == 105  # one in twenty missed at the first poll; the follow-up waits for the key
    assert slot_bound.polls == 108  # the polls come when tasks are likely done: a few need a follow-up or two


def test_a_slot_bound_batch_is_limited_by_what_may_run_at_once():
    spec = parse_batch(("prompt,provider\n" + "a cat,gencraft\n" * 8).encode(), "cats.csv")
    plan = plan_batch(spec, {"gc": account("gc", "gencraft", rpm=600, max_in_flight=2)}, lambda p, m: 30.0)
    assert plan.seconds == 4 * 30  # four waves of two, each 30 s; the last wave's time is in them


def test_pictures_and_credits_follow_each_job(tmp_path: Path):
    spec = parse_batch(b"prompt,provider,count\na,cloudsway,2\nb,cloudsway,3\n", "c.csv")
    plan = plan_batch(spec, {"cw": account("cw", "cloudsway", rpm=60)}, lambda p, m: 10.0)
    assert (plan.providers[0].pictures, plan.credits, plan.providers[0].submits) == (5, 5, 2)


def test_a_provider_without_an_account_never_finishes():
    spec = parse_batch(b"prompt,provider\na,cloudsway\n", "c.csv")
    assert plan_batch(spec, {}, lambda p, m: 10.0).seconds == float("inf")


def test_genq_plan_prints_the_estimate_and_writes_nothing(tmp_path: Path):
    (tmp_path / "accounts.yaml").write_text(
        "accounts:\n  - {name: gc, provider: gencraft, api_key_env: UNSET_KEY, base_url: 'http://x', rpm: 10,"
        " max_in_flight: 4}\n"
    )
    (tmp_path / "cats.csv").write_text("prompt,provider\n" + "a cat,gencraft\n" * 30)

    result = genq("plan", "cats.csv", "--json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    estimate = json.loads(result.stdout)
    assert estimate["requests"] == 30 + 2 and estimate["credits"] == 30
    assert rows(tmp_path / "var" / "genq.db") == (0, 0)


def test_a_sprite_job_counts_its_frames_and_polls_them_as_one_batch():
    spec = parse_batch(b"prompt,provider,sprite\na knight,qtpixel,walk\na slime,qtpixel,idle\n", "s.csv")
    [qtpixel] = plan_batch(spec, {"qp": account("qp", "qtpixel", rpm=60)}, lambda p, m: 10.0).providers
    assert (qtpixel.pictures, qtpixel.credits, qtpixel.submits) == (6, 6, 2)
    assert qtpixel.polls == 2  # 6 frames in batches of up to 4, a follow-up for some


def test_a_paced_key_frees_each_minute_as_it_was_spent():
    spec = parse_batch(("prompt,provider\n" + "a cat,girlgenerator\n" * 170).encode(), "cats.csv")
    accounts = {"gg": account("gg", "girlgenerator", rpm=120, max_in_flight=16)}

    [girl] = plan_batch(spec, accounts, lambda p, m: 3.0, spread=10).providers

    assert (girl.submits, girl.polls) == (170, 179)  # one in twenty missed, one follow-up each
    # Two whole minutes of 120, then the last 109: 16 at once, the other 93 at 25 a 10 seconds.
    assert girl.seconds == 2 * 60 + 10 * 93 / 25 + 3
