"""What QT Pixel takes: pixel art, up to 4 pictures a job, or a sprite mode that sets its own frames."""

from __future__ import annotations

from jobs.offers.base import Unsupported, no_setting, not_offered
from jobs.spec import JobSpec

SPRITE_FRAMES = {"walk": 4, "idle": 2, "attack": 3, "directions": 4}
"""The sprite modes and the frames each always makes."""
MODES = (*SPRITE_FRAMES, "variations", "random")
MAX_COUNT = 4
"""Pictures one job may ask for (one batch of the provider's holds at most 4 tasks)."""
BACKGROUNDS = ("transparent", "white")
UNSUPPORTED_FIELDS = ("model", "mode", "aspect", "size", "references", "seed", "steps", "style")
"""JobSpec fields QT Pixel has no parameter for: refused rather than silently dropped."""


def check(spec: JobSpec) -> list[Unsupported]:
    problems = []
    if spec.sprite is not None and spec.sprite not in MODES:
        problems.append(Unsupported("sprite", f"sprite {spec.sprite!r} is not a mode; use one of {', '.join(MODES)}"))
    frames = SPRITE_FRAMES.get(spec.sprite or "")
    if frames is not None and spec.count not in (1, frames):
        reason = f"sprite {spec.sprite} always makes {frames} frames; leave count out or set it to {frames}"
        problems.append(Unsupported("count", reason))
    elif frames is None and spec.count > MAX_COUNT:
        problems.append(Unsupported("count", f"one job makes at most {MAX_COUNT} pictures"))
    if spec.background is not None and spec.background not in BACKGROUNDS:
        problems.append(not_offered("background", spec.background, BACKGROUNDS))
    return problems + no_setting("qtpixel", spec, UNSUPPORTED_FIELDS)
