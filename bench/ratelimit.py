"""Rate-limit use: one girlgenerator key at 120 requests a minute, polls counted, four worker processes,
a batch of about three minutes of work. genq's fleet-wide limiter, beside the same limiter without
its pacing (the whole minute may go at once) and beside Celery's own per-worker ``rate_limit`` on the
submit task; and ``genq plan``'s estimate beside what the run then spent."""

from __future__ import annotations

import os
from bisect import bisect_left
from pathlib import Path

from bench.fleet import Fleet, fleet, scoped_environ
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


def sandbox_config() -> SandboxConfig:
    girl = ProviderConfig(rpm=RPM, latency_mean=GENERATION[0], latency_jitter=GENERATION[1])
    return SandboxConfig(image_long_side=64, providers={"girlgenerator": girl})


def genq_run(env: dict[str, str] | None = None) -> dict[str, float]:
    """``env``: settings of this run (``GENQ_RATE_SPREAD=0`` for the limiter without its pacing)."""
    account = {"name": "girl-1", "provider": "girlgenerator", "rpm": RPM, "max_in_flight": 16}
    with scoped_environ(env or {}), fleet(sandbox_config(), [account], workers=WORKERS) as f:
        spec = f.batch("rate", [f"portrait number {n}" for n in range(JOBS)], "girlgenerator")
        accounts = load_accounts(Path(f.env["GENQ_ACCOUNTS"]))
        plan = plan_batch(spec, accounts, lambda _p, _m: GENERATION[0], spread=f.settings.rate_spread)
        status, seconds = f.run(spec)
        figures = _figures(f, status.state)
        return figures | {"plan_requests": plan.requests, "plan_seconds": plan.seconds, "seconds": seconds}


def celery_rate_limit_run() -> dict[str, float]:
    """The same batch, genq's limiter out of the way, Celery's ``rate_limit`` of RPM/WORKERS on submit."""
    account = {"name": "girl-1", "provider": "girlgenerator", "rpm": 1_000_000, "max_in_flight": 16}
    limit = {"GENQ_BENCH_CELERY_RATE_LIMIT": f"{RPM // WORKERS}/m"}
    app = "bench.celery_rate_limited"
    with scoped_environ(limit), fleet(sandbox_config(), [account], workers=WORKERS, app=app) as f:
        spec = f.batch("rate", [f"portrait number {n}" for n in range(JOBS)], "girlgenerator")
        status, _ = f.run(spec)
        return _figures(f, status.state)


def _figures(f: Fleet, state: str) -> dict[str, float]:
    requests = f.keyed_requests("girlgenerator")
    times = sorted(r["t"] for r in requests if r["status"] != 429)
    last_submit = max(r["t"] for r in requests if r["kind"] == "submit" and r["status"] != 429)
    return {
        "requests": len(times),
        "rate_429": sum(1 for r in requests if r["status"] == 429),
        "use": minute_use(times, times[0], last_submit),
        "busiest_minute": busiest_minute(times),
        "succeeded": 1.0 if state == "succeeded" else 0.0,
    }


def minute_use(times: list[float], start: float, end: float) -> float:
    """Requests per minute over the limit, averaged over every 60-second window (one a second) from
    the first request to the last submit: the span in which there was always work waiting."""
    starts = [start + k for k in range(int(end - start - 60) + 1)] or [start]
    counts = [bisect_left(times, t + 60) - bisect_left(times, t) for t in starts]
    return sum(counts) / len(counts) / RPM


def main() -> None:
    genq = genq_run()
    unpaced = genq_run({"GENQ_RATE_SPREAD": "0"})
    celery = celery_rate_limit_run()
    print(f"rate-limit use: girlgenerator at {RPM} requests/min (polls counted), {WORKERS} worker processes, "
          f"{JOBS} jobs")  # fmt: skip
    print(f"  genq's limiter             use {genq['use']:.3f} of the limit (goal 0.98 or more), "
          f"busiest minute {genq['busiest_minute']:.0f}, 429s {genq['rate_429']:.0f} (goal 0)")  # fmt: skip
    print(f"  the same, not paced        use {unpaced['use']:.3f} of the limit, "
          f"busiest minute {unpaced['busiest_minute']:.0f}, 429s {unpaced['rate_429']:.0f}")  # fmt: skip
    print(f"  Celery rate_limit {RPM // WORKERS}/m x{WORKERS}   429s {celery['rate_429']:.0f}, "
          f"busiest minute {celery['busiest_minute']:.0f}")  # fmt: skip
    print("estimate: genq plan beside the run")
    print(f"  requests  planned {genq['plan_requests']:.0f}, spent {genq['requests']:.0f}: "
          f"ratio {genq['requests'] / genq['plan_requests']:.3f} (goal within 10%)")  # fmt: skip
    print(f"  duration  planned {genq['plan_seconds']:.0f} s, took {genq['seconds']:.0f} s: "
          f"ratio {genq['seconds'] / genq['plan_seconds']:.3f} (goal within 10%)")  # fmt: skip


if __name__ == "__main__":
    main()
