"""Rate-limit use: one girlgenerator key at 120 requests a minute, polls counted, four worker processes,
a batch of about three minutes of work, beside Celery's own per-worker ``rate_limit`` on the submit
task; two keys at girlgenerator's published 10 a minute in one pool; the seconds from each request's
token to its arrival at the sandbox; and ``genq plan``'s estimate beside what the run then spent."""

from __future__ import annotations

import os
import statistics
from bisect import bisect_left
from pathlib import Path

from bench.fleet import Fleet, fleet, scoped_environ, token_to_arrival
from jobs.accounts import load_accounts
from sandbox.config import ProviderConfig, SandboxConfig
from sandbox.stats import busiest_minute
from workers.plan import plan_batch

RPM = 120
WORKERS = 4
JOBS = int(os.environ.get("GENQ_BENCH_RATE_JOBS", "170"))
"""About 2.1 requests a job (a submit, a poll, some follow-ups): three minutes at 120 a minute."""
GENERATION = (3.0, 1.0)
"""Seconds a picture takes in the sandbox: mean and jitter."""
POOL_RPM = 10
"""girlgenerator's published limit, per key."""
POOL_JOBS = int(os.environ.get("GENQ_BENCH_POOL_JOBS", "32"))
"""About three minutes of work for two keys at 10 a minute."""


def sandbox_config(rpm: int = RPM) -> SandboxConfig:
    girl = ProviderConfig(rpm=rpm, latency_mean=GENERATION[0], latency_jitter=GENERATION[1])
    return SandboxConfig(image_long_side=64, providers={"girlgenerator": girl})


def genq_run(env: dict[str, str] | None = None) -> tuple[dict[str, float], list[float]]:
    """``env``: settings of this run (``GENQ_RATE_SPREAD=0`` for the limiter without its pacing); the
    run's figures and each request's seconds from token to arrival."""
    account = {"name": "girl-1", "provider": "girlgenerator", "rpm": RPM, "max_in_flight": 16}
    with scoped_environ(env or {}), fleet(sandbox_config(), [account], workers=WORKERS) as f:
        spec = f.batch("rate", [f"portrait number {n}" for n in range(JOBS)], "girlgenerator")
        accounts = load_accounts(Path(f.env["GENQ_ACCOUNTS"]))
        plan = plan_batch(spec, accounts, lambda _p, _m: GENERATION[0], spread=f.settings.rate_spread)
        status, seconds = f.run(spec)
        figures = _figures(f, status.state, RPM)
        lags = token_to_arrival(f.tokens.times("girl-1"), f.arrivals("girl-1"))
        return figures | {"plan_requests": plan.requests, "plan_seconds": plan.seconds, "seconds": seconds}, lags


def pool_run() -> tuple[dict[str, float], list[float]]:
    """Two girlgenerator keys at their published 10 a minute, one pool: jobs go to either."""
    accounts = [{"name": f"girl-{n}", "provider": "girlgenerator", "rpm": POOL_RPM, "max_in_flight": 8} for n in (1, 2)]
    with fleet(sandbox_config(POOL_RPM), accounts, workers=WORKERS) as f:
        spec = f.batch("pool", [f"portrait number {n}" for n in range(POOL_JOBS)], "girlgenerator")
        status, _ = f.run(spec)
        names = [str(a["name"]) for a in accounts]
        lags = [lag for name in names for lag in token_to_arrival(f.tokens.times(name), f.arrivals(name))]
        return _figures(f, status.state, POOL_RPM * len(accounts)), lags


def celery_rate_limit_run() -> dict[str, float]:
    """The same batch, genq's limiter out of the way, Celery's ``rate_limit`` of RPM/WORKERS on submit."""
    account = {"name": "girl-1", "provider": "girlgenerator", "rpm": 1_000_000, "max_in_flight": 16}
    limit = {"GENQ_BENCH_CELERY_RATE_LIMIT": f"{RPM // WORKERS}/m"}
    app = "bench.celery_rate_limited"
    with scoped_environ(limit), fleet(sandbox_config(), [account], workers=WORKERS, app=app) as f:
        spec = f.batch("rate", [f"portrait number {n}" for n in range(JOBS)], "girlgenerator")
        status, _ = f.run(spec)
        return _figures(f, status.state, RPM)


def _figures(f: Fleet, state: str, limit: int) -> dict[str, float]:
    requests = f.keyed_requests("girlgenerator")
    times = sorted(r["t"] for r in requests if r["status"] != 429)
    last_submit = max(r["t"] for r in requests if r["kind"] == "submit" and r["status"] != 429)
    return {
        "requests": len(times),
        "rate_429": sum(1 for r in requests if r["status"] == 429),
        "use": minute_use(times, times[0], last_submit, limit),
        "busiest_minute": busiest_minute(times),
        "succeeded": 1.0 if state == "succeeded" else 0.0,
    }


def minute_use(times: list[float], start: float, end: float, limit: int) -> float:
    """Requests per minute over the limit, averaged over every 60-second window (one a second) from
    the first request to the last submit: the span in which there was always work waiting."""
    starts = [start + k for k in range(int(end - start - 60) + 1)] or [start]
    counts = [bisect_left(times, t + 60) - bisect_left(times, t) for t in starts]
    return sum(counts) / len(counts) / limit


def main() -> dict[str, float]:
    genq, genq_lags = genq_run()
    pool, pool_lags = pool_run()
    celery = celery_rate_limit_run()
    lags = sorted(genq_lags + pool_lags)
    figures = {
        "rate_use_120": genq["use"],
        "rate_429s_120": genq["rate_429"],
        "rate_busiest_minute_120": genq["busiest_minute"],
        "rate_use_10_pool": pool["use"],
        "rate_429s_10_pool": pool["rate_429"],
        "rate_celery_429s": celery["rate_429"],
        "token_to_arrival_p50_s": statistics.median(lags),
        "token_to_arrival_p99_s": lags[min(len(lags) - 1, int(0.99 * len(lags)))],
        "token_to_arrival_max_s": lags[-1],
        "estimate_requests_ratio": genq["requests"] / genq["plan_requests"],
        "estimate_seconds_ratio": genq["seconds"] / genq["plan_seconds"],
    }
    print(f"rate-limit use: girlgenerator, polls counted, {WORKERS} worker processes")
    print(f"  one key at {RPM}/min, {JOBS} jobs   use {genq['use']:.3f} of the limit (goal 0.99 or more), "
          f"busiest minute {genq['busiest_minute']:.0f}, 429s {genq['rate_429']:.0f} (goal 0)")  # fmt: skip
    print(f"  two keys at {POOL_RPM}/min, {POOL_JOBS} jobs  use {pool['use']:.3f} of the limit (goal 0.98 or more), "
          f"429s {pool['rate_429']:.0f} (goal 0)")  # fmt: skip
    print(f"  Celery rate_limit {RPM // WORKERS}/m x{WORKERS}   429s {celery['rate_429']:.0f}, "
          f"busiest minute {celery['busiest_minute']:.0f}")  # fmt: skip
    print(f"token to arrival, {len(lags)} requests of both runs: p50 {figures['token_to_arrival_p50_s']:.4f} s, "
          f"p99 {figures['token_to_arrival_p99_s']:.4f} s (goal 0.05 or less), "
          f"longest {figures['token_to_arrival_max_s']:.4f} s")  # fmt: skip
    print("estimate: genq plan beside the one-key run")
    print(f"  requests  planned {genq['plan_requests']:.0f}, spent {genq['requests']:.0f}: "
          f"ratio {figures['estimate_requests_ratio']:.3f} (goal within 5%)")  # fmt: skip
    print(f"  duration  planned {genq['plan_seconds']:.0f} s, took {genq['seconds']:.0f} s: "
          f"ratio {figures['estimate_seconds_ratio']:.3f} (goal within 5%)")  # fmt: skip
    return figures


if __name__ == "__main__":
    main()
