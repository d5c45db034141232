"""The errors genq raises about its own input and configuration.

    GenqError
     ├── BatchFileError      a batch file is refused; carries every problem (file, line, field)
     ├── ConfigError         accounts.yaml or a setting is wrong
     ├── StorageError        the object store refused a read or a write
     └── NotFound            a batch or job id that does not exist

Provider outcomes are not errors of this tree; see ``workers.providers.base``.
"""

from __future__ import annotations

from dataclasses import dataclass


class GenqError(Exception):
    """Anything genq refuses on purpose, with a message meant for the person running it."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an input file: where it is and what is wrong."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class BatchFileError(GenqError):
    """A batch file that cannot be taken as it is. Nothing of it has been written."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigError(GenqError):
    """A configuration that cannot work; the message names the account and variable, never a key."""


class StorageError(GenqError):
    """The object store could not read or write a key."""


class NotFound(GenqError):
    """A batch or job that is not in the database."""
