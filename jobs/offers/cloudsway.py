"""What Cloudsway's Flux-1-schnell deployment takes: 1 to 8 pictures a task, 4 to 10 steps, seven aspects."""

from __future__ import annotations

from jobs.offers.base import Unsupported, no_setting, not_offered
from jobs.spec import JobSpec

ASPECTS = ("1:1", "2:3", "3:2", "3:4", "4:3", "16:9", "9:16")
COUNTS = range(1, 9)
"""Pictures one task may make (``batchsize``)."""
STEPS = range(4, 11)
UNSUPPORTED_FIELDS = ("model", "mode", "size", "references", "style", "background", "sprite")
"""JobSpec fields the deployment has no parameter for: refused rather than silently dropped (the model
is the deployment's, and the size follows from the aspect)."""


def check(spec: JobSpec) -> list[Unsupported]:
    problems = []
    if spec.aspect is not None and spec.aspect not in ASPECTS:
        problems.append(not_offered("aspect", spec.aspect, ASPECTS))
    if spec.count not in COUNTS:
        reason = f"one task makes {COUNTS.start} to {COUNTS.stop - 1} pictures, not {spec.count}; split the job"
        problems.append(Unsupported("count", reason))
    if spec.steps is not None and spec.steps not in STEPS:
        problems.append(Unsupported("steps", f"steps must be from {STEPS.start} to {STEPS.stop - 1}"))
    return problems + no_setting("cloudsway", spec, UNSUPPORTED_FIELDS)
