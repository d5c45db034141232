"""What GenCraft takes: four models, each in modes ``text`` and ``edit``, at most 4 pictures a submit.

Every listed model (``gpt-image-2``, ``pro``, ``flash2``, ``flash``) takes modes ``text`` and ``edit``
only; ``fusion`` is documented, yet no model supports it, so ``check`` refuses it at load rather than
letting the provider answer 400 at send. The seed says ``count`` is "capped per model" but publishes
no caps: 4 for every model is our choice, and the sandbox enforces the same.
"""

from __future__ import annotations

from jobs.offers.base import Unsupported, no_setting, not_offered
from jobs.spec import JobSpec

MODEL_MODES = {
    "gpt-image-2": ("text", "edit"),
    "pro": ("text", "edit"),
    "flash2": ("text", "edit"),
    "flash": ("text", "edit"),
}
"""The seed's model table: each model and the modes it supports."""
DEFAULT_MODEL = "gpt-image-2"
DOCUMENTED_MODES = ("text", "edit", "fusion")
MODEL_MAX_COUNT = dict.fromkeys(MODEL_MODES, 4)
"""Pictures one submit may ask of each model: unpublished, 4 is our choice (the sandbox agrees)."""
ASPECTS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")
SIZES = ("1K", "2K", "4K")
UNSUPPORTED_FIELDS = ("seed", "steps", "style", "background", "sprite")
"""JobSpec fields GenCraft has no parameter for: refused rather than silently dropped."""


def check(spec: JobSpec) -> list[Unsupported]:
    problems = []
    model = spec.model or DEFAULT_MODEL
    modes = MODEL_MODES.get(model)
    if modes is None:
        problems.append(not_offered("model", model, MODEL_MODES))
    mode = _mode(spec)
    if mode == "fusion":
        problems.append(Unsupported("mode", "fusion is documented, but no model supports it; use text or edit"))
    elif mode not in DOCUMENTED_MODES:
        problems.append(Unsupported("mode", f"mode {mode!r} is not offered; use text or edit"))
    elif modes is not None and mode not in modes:
        problems.append(Unsupported("mode", f"model {model} does not support mode {mode}"))
    if mode == "edit" and not spec.references:
        problems.append(Unsupported("references", "mode edit needs at least one reference picture"))
    if mode == "text" and spec.references:
        problems.append(Unsupported("references", "mode text takes no reference pictures; use mode edit"))
    if spec.aspect is not None and spec.aspect not in ASPECTS:
        problems.append(not_offered("aspect", spec.aspect, ASPECTS))
    if spec.size is not None and spec.size not in SIZES:
        problems.append(not_offered("size", spec.size, SIZES))
    cap = MODEL_MAX_COUNT.get(model)
    if cap is not None and spec.count > cap:
        problems.append(Unsupported("count", f"model {model} makes at most {cap} pictures a submit"))
    return problems + no_setting("gencraft", spec, UNSUPPORTED_FIELDS)


def _mode(spec: JobSpec) -> str:
    """The mode the job is sent with: as asked, else ``edit`` when it has references, else ``text``."""
    return spec.mode or ("edit" if spec.references else "text")
