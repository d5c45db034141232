"""``make bench``: each section prints figures measured side by side in one run, each beside its goal,
and every figure goes into ``var/bench.json`` (one flat object of numbers: seconds, ratios, MB).

throughput: the pipeline's end-to-end throughput beside a bare Celery no-op's, same broker,
same worker settings, same run; and their ratio.
ratelimit: keys' use of their limit by four worker processes, beside Celery's own ``rate_limit``;
the seconds from a request's token to its arrival; ``genq plan``'s estimate beside what the run spent.
polls: provider requests per finished image beside the polling loop of the provider's document, and
the seconds from a picture being done to its first poll.
admission: one dispatch round with 10,000 and with 1,000,000 pending jobs on PostgreSQL.
ingest: ``genq submit`` of a 100,000-row and a 1,000,000-row CSV: rows a second and peak memory.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path("var") / "bench.json"


def main(argv: list[str]) -> None:
    """``python -m bench [section ...]``: every section when none is named."""
    from bench import admission, ingest, polls, ratelimit, throughput

    sections: dict[str, Callable[[], dict[str, float]]] = {
        "throughput": throughput.main,
        "ratelimit": ratelimit.main,
        "polls": polls.main,
        "admission": admission.main,
        "ingest": ingest.main,
    }
    unknown = [name for name in argv if name not in sections]
    if unknown:
        raise SystemExit(f"unknown bench section(s): {', '.join(unknown)}; known: {', '.join(sections)}")
    figures: dict[str, float] = {}
    started = time.monotonic()
    for name in argv or list(sections):
        section_started = time.monotonic()
        figures |= sections[name]()
        figures[f"{name}_section_seconds"] = round(time.monotonic() - section_started, 1)
        _write(figures)
        print()
    figures["bench_seconds"] = round(time.monotonic() - started, 1)
    _write(figures)
    print(f"bench: {figures['bench_seconds']:.0f} s in all; every figure is in {RESULTS}")


def _write(figures: dict[str, float]) -> None:
    """Written after each section, so a section that fails leaves the figures of those before it."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
