"""What GirlGeneratorAI takes: a scene (text- or image-to-image), one picture, a prompt of 2000 characters."""

from __future__ import annotations

from jobs.offers.base import Unsupported, no_setting, not_offered
from jobs.spec import JobSpec

TEXT, IMAGE = "text-to-image", "image-to-image"
SCENES = (TEXT, IMAGE)
ASPECTS = ("auto", "1:1", "3:2", "2:3", "9:16", "16:9", "3:4", "4:3")
MAX_PROMPT = 2000
"""Characters a prompt may have."""
UNSUPPORTED_FIELDS = ("model", "size", "seed", "steps", "style", "background", "sprite")
"""JobSpec fields the API has no parameter for: refused rather than silently dropped."""


def scene_of(spec: JobSpec) -> str:
    """The job's ``mode``, or image-to-image when it brings references and text-to-image when not."""
    return spec.mode or (IMAGE if spec.references else TEXT)


def check(spec: JobSpec) -> list[Unsupported]:
    problems = []
    scene = scene_of(spec)
    if scene not in SCENES:
        problems.append(Unsupported("mode", f"mode {scene!r} is not a scene; use {TEXT} or {IMAGE}"))
    elif scene == IMAGE and not spec.references:
        problems.append(Unsupported("references", f"{IMAGE} needs at least one reference picture URL"))
    elif scene == TEXT and spec.references:
        problems.append(Unsupported("references", f"{TEXT} takes no reference pictures; use mode {IMAGE}"))
    if len(spec.prompt) > MAX_PROMPT:
        reason = f"the prompt has {len(spec.prompt)} characters; at most {MAX_PROMPT} are taken"
        problems.append(Unsupported("prompt", reason))
    if spec.aspect is not None and spec.aspect not in ASPECTS:
        problems.append(not_offered("aspect", spec.aspect, ASPECTS))
    if spec.count != 1:
        problems.append(Unsupported("count", f"one generation makes one picture, not {spec.count}; split the job"))
    return problems + no_setting("girlgenerator", spec, UNSUPPORTED_FIELDS)
