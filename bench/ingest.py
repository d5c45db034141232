"""Ingest: ``genq submit`` of a 100,000-row and a 1,000,000-row CSV, its wall time and its peak memory.

Each file is submitted by the real command in a child process of its own, with its own ``var/``
(the embedded SQLite database and a private Redis on a socket there, as ``genq up`` would leave), so
the figures are those a person sees. The child's peak resident memory comes from ``wait4``: the
kernel's high-water mark of that one process, not of every child this process ever waited for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from jobs.redisserver import EmbeddedRedis
from jobs.spec import PROVIDERS

SIZES = {"100k": 100_000, "1m": 1_000_000}
GOAL_SECONDS = 60.0
"""For the 1,000,000-row file."""
GOAL_PEAK_MB = 300.0
"""For any file, however long."""
KEY_ENV = "GENQ_BENCH_KEY"


def write_catalog(path: Path, rows: int) -> Path:
    """A CSV of ``rows`` jobs (prompt, provider, name), spread over every provider the sandbox imitates."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("prompt,provider,name\n")
        for number in range(1, rows + 1):
            provider = PROVIDERS[number % len(PROVIDERS)]
            out.write(f"a lantern on a quiet harbour at dusk (study {number}),{provider},item-{number:07d}\n")
    return path


def write_accounts(path: Path) -> Path:
    """One account a provider, at an address nothing is sent to: ``submit`` only writes rows."""
    accounts = [
        {
            "name": f"bench-{provider}",
            "provider": provider,
            "api_key_env": KEY_ENV,
            "base_url": "http://127.0.0.1:9",
            "rpm": 600,
            "max_in_flight": 16,
        }
        for provider in PROVIDERS
    ]
    path.write_text(yaml.safe_dump({"accounts": accounts}))
    return path


def submit(catalog: Path, var_dir: Path, accounts: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``genq submit`` of ``catalog``; it must succeed."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GENQ_")}
    env |= {"GENQ_VAR_DIR": str(var_dir), "GENQ_ACCOUNTS": str(accounts), KEY_ENV: "bench"}
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as problems:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "jobs.cli", "submit", str(catalog)], env=env,
                                 stdout=output, stderr=problems)  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        problems.seek(0)
        if child.returncode != 0:
            text = problems.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"genq submit {catalog.name} failed ({child.returncode}): {text}")
        printed = output.read().decode().strip()
    assert printed.isdigit(), printed
    return seconds, usage.ru_maxrss / 1024  # kB on Linux


def main() -> dict[str, float]:
    figures: dict[str, float] = {}
    print("ingest: genq submit of a CSV (prompt, provider, name) into the embedded SQLite database")
    with tempfile.TemporaryDirectory(prefix="genq-bench-ingest-") as tmp:
        work = Path(tmp)
        accounts = write_accounts(work / "accounts.yaml")
        for label, rows in SIZES.items():
            var_dir = work / f"var-{label}"
            catalog = write_catalog(work / f"catalog-{label}.csv", rows)
            with EmbeddedRedis(var_dir):
                seconds, peak_mb = submit(catalog, var_dir, accounts)
            catalog.unlink()
            figures |= {
                f"ingest_{label}_seconds": round(seconds, 2),
                f"ingest_{label}_rows_per_s": round(rows / seconds),
                f"ingest_{label}_peak_rss_mb": round(peak_mb, 1),
            }
            print(f"  {rows:>9,} rows  {seconds:7.1f} s  {rows / seconds:9,.0f} rows/s  (goal {GOAL_SECONDS:.0f} s "
                  f"or less for 1,000,000)")  # fmt: skip
            print(f"  {'':>9}       peak RSS {peak_mb:7.1f} MB  (goal {GOAL_PEAK_MB:.0f} MB or less)")
    return figures


if __name__ == "__main__":
    main()
