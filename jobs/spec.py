"""The values a batch file becomes: frozen, validated, and free of anything secret.

A ``JobSpec`` is one generation as the person asked for it, in genq's own vocabulary; each provider
adapter translates it into its own request. It travels into the database as JSON and back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

PROVIDERS: tuple[str, ...] = ("gencraft", "girlgenerator", "talecraft", "qtpixel", "cloudsway")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)*$")
_ANIMATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


def _usable_name(value: str | None, what: str) -> str | None:
    if value is not None and (not _NAME.match(value) or ".." in value):
        raise ValueError(f"{value!r} is not a usable {what}: letters, digits, '.', '_', '-' and '/' between parts")
    return value


class JobSpec(BaseModel):
    """One generation: a prompt, where to send it, and how it should look."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(min_length=1)
    provider: str
    account: str | None = None
    """Pin the job to one account of the provider's pool; unset lets the dispatcher choose."""
    name: str | None = None
    """The stored image's key below the batch (``sku-1042/front``); unset means the job's number."""
    model: str | None = None
    mode: str | None = None
    aspect: str | None = None
    size: str | None = None
    count: int = Field(default=1, ge=1)
    references: tuple[str, ...] = ()
    seed: int | None = None
    steps: int | None = None
    style: str | None = None
    background: str | None = None
    sprite: str | None = None
    sheet: str | None = None
    """The sprite sheet this row's pictures are frames of; rows naming the same sheet share one."""
    animation: str | None = None
    """The animation of the sheet the frames belong to (a qtpixel sprite's mode by default)."""
    frame: int | None = Field(default=None, ge=0)
    """The frame's place in its sheet; frames are ordered by it, then by line."""
    fps: float | None = Field(default=None, gt=0, le=120)
    """Frames a second of the animation (8 when unset)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Passed to the provider as is, after genq's own fields."""

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in PROVIDERS:
            raise ValueError(f"unknown provider {value!r}; known: {', '.join(PROVIDERS)}")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        return _usable_name(value, "image name")

    @field_validator("sheet")
    @classmethod
    def _safe_sheet(cls, value: str | None) -> str | None:
        return _usable_name(value, "sheet name")

    @field_validator("animation")
    @classmethod
    def _safe_animation(cls, value: str | None) -> str | None:
        if value is not None and not _ANIMATION.match(value):
            raise ValueError(f"{value!r} is not a usable animation name: up to 64 letters, digits, '.', '_', '-'")
        return value


class SheetSettings(BaseModel):
    """How a batch's sprite sheets are packed (the ``sheets`` header of a YAML or JSONL file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    padding: int = Field(default=0, ge=0, le=64)
    """Transparent pixels between frames."""
    trim: bool = False
    """Cut each frame's transparent border off, keeping its offset in the atlas."""


class BatchSpec(BaseModel):
    """A whole batch file, checked: its jobs in file order, and the hash that makes it the same batch."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: str
    content_hash: str
    priority: int = 0
    on_uncertain: str | None = None
    """What becomes of a job whose lost answer the provider cannot account for (``fail`` or
    ``resubmit``); None when the file does not say."""
    sheets: SheetSettings = SheetSettings()
    budget: int | None = None
    """Credits the batch may spend at most (the ``budget`` header); None: no cap."""
    jobs: tuple[JobSpec, ...]
    lines: tuple[int, ...]
    """The source line of each job, in the same order."""

    @property
    def job_count(self) -> int:
        return len(self.jobs)

    def rows(self) -> Iterator[tuple[JobSpec, int]]:
        """Each job and its source line, in file order."""
        return zip(self.jobs, self.lines, strict=True)


class BatchRows(Protocol):
    """A checked batch as the producer writes it: its fields, and its jobs one at a time.

    A ``BatchSpec`` holds its jobs; a ``jobs.batchfile.StreamedBatch`` reads them from its file again,
    so a batch of a million rows is written without being held.
    """

    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def content_hash(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def on_uncertain(self) -> str | None: ...
    @property
    def sheets(self) -> SheetSettings: ...
    @property
    def budget(self) -> int | None: ...
    @property
    def job_count(self) -> int: ...
    def rows(self) -> Iterator[tuple[JobSpec, int]]: ...
