"""What TaleCraft AI takes: one picture a call, in its one style, in seven aspects."""

from __future__ import annotations

from jobs.offers.base import Unsupported, no_setting, not_offered
from jobs.spec import JobSpec

STYLES = ("children_book",)
ASPECTS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9")
UNSUPPORTED_FIELDS = ("model", "mode", "size", "references", "seed", "steps", "background", "sprite")
"""JobSpec fields TaleCraft has no parameter for: refused rather than silently dropped."""


def check(spec: JobSpec) -> list[Unsupported]:
    problems = []
    if spec.style is not None and spec.style not in STYLES:
        problems.append(Unsupported("style", f"style {spec.style!r} is not offered; only {', '.join(STYLES)}"))
    if spec.aspect is not None and spec.aspect not in ASPECTS:
        problems.append(not_offered("aspect", spec.aspect, ASPECTS))
    if spec.count > 1:
        problems.append(Unsupported("count", "one call makes one picture; write one job per picture"))
    return problems + no_setting("talecraft", spec, UNSUPPORTED_FIELDS)
