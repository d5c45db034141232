"""Batch files (CSV, YAML, JSONL) into checked jobs, or every problem in them at once.

The whole file is checked before anything is written, so a refused file leaves no row behind; and
every problem names the file, the line and the field, because the person fixing a 5,000-row catalog
needs to find line 4,312 rather than be told "invalid input".

Each format ends in the same place: rows, each a plain mapping with the source line of the row and of
each of its fields, merged over the file's defaults and validated as a ``JobSpec``. CSV and JSONL are
read a line at a time, so a file of a million rows is checked, and later read again to be written,
without ever being held: ``open_batch`` checks a file and returns a ``StreamedBatch`` whose rows are
read from the file again. ``load_batch`` and ``parse_batch`` hold the jobs in a ``BatchSpec``, for the
callers that want them all (a plan, a small file in a test). YAML is one document, read whole.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import re
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import IO, Any

import yaml
from pydantic import ValidationError

from jobs.errors import BatchFileError, ConfigError, Problem
from jobs.spec import BatchSpec, JobSpec, SheetSettings
from jobs.states import UncertainPolicy

_BATCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
_HEADER_FIELDS = ("name", "priority", "on_uncertain", "sheets", "budget", "defaults")
_POLICIES = tuple(policy.value for policy in UncertainPolicy)
_JOB_FIELDS = tuple(JobSpec.model_fields)
_OPTION_PREFIX = "options."
_REFERENCE_SEPARATOR = "|"
_PRIORITY_MIN, _PRIORITY_MAX = -(2**31), 2**31 - 1
"""The database keeps a priority in a 32-bit integer column."""
_MAX_DEPTH = 32
"""Levels of lists and mappings within one field; pydantic will not serialise a few hundred."""
_MAX_VALUES = 10_000
"""Values in one job, nested ones counted: YAML aliases of aliases would otherwise expand a few hundred
bytes into millions of values when the job is stored."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_NEWLINE = re.compile(r"\r\n|\r|\n")
"""Line ends as an editor counts them; ``str.splitlines`` also breaks at characters such as U+2028 that
JSON and CSV keep inside a value, and that editors show within a line."""
_NUMBER_TOO_LONG = "a number of more than 4,300 digits, too long to read"
"""Python refuses to read longer whole numbers (a guard against slow conversions) with a ValueError."""
_NESTED_TOO_DEEP = "lists or mappings nested too deeply to read"
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_CHECK_CHUNK = 1_000
"""Rows handed to a batch's own checks (accounts, offers, addresses) at a time."""
_FILE_CHANGED = "the file changed while it was being submitted; nothing was written, submit it again"

Opener = Callable[[], IO[bytes]]
"""Opens the batch file's bytes from the start; every reading of the file opens it anew."""
RowCheck = Callable[[BatchSpec], list[Problem]]
"""The checks a batch's rows must pass besides the file's own (``jobs.checks.batch_problems`` with
the accounts), given a few rows at a time as a ``BatchSpec`` of those rows."""


@dataclass
class _Row:
    """One job as the file wrote it, before validation."""

    line: int
    values: dict[str, Any]
    field_lines: dict[str, int] = field(default_factory=dict)


@dataclass
class _Parsed:
    """What a format parser has found so far: the header, and any problems it could not get past.

    A parser yields its rows; the header is known once it has yielded the first row (or ended)."""

    header: dict[str, Any] = field(default_factory=dict)
    header_lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class _Header:
    """The batch's own fields, checked; a file without a header has the defaults."""

    name: str
    priority: int
    on_uncertain: str | None
    sheets: SheetSettings
    budget: int | None
    defaults: dict[str, Any]


@dataclass(frozen=True)
class StreamedBatch:
    """A checked batch file on disk: its header, its hash and its number of jobs now, its jobs read
    again from the file (``rows``) when they are written, so however long the file no more than a
    row of it is held. If the file has changed since it was checked, ``rows`` ends in a refusal."""

    name: str
    source: str
    content_hash: str
    priority: int
    on_uncertain: str | None
    sheets: SheetSettings
    budget: int | None
    job_count: int
    opener: Opener
    stem: str

    def rows(self) -> Iterator[tuple[JobSpec, int]]:
        """Each job and its line, in file order, read from the file again."""
        reading = _Reading(self.opener, self.source, self.stem)
        for job, row in reading.jobs():
            yield job, row.line
        if reading.problems or reading.content_hash != self.content_hash or reading.count != self.job_count:
            raise BatchFileError([Problem(self.source, None, None, _FILE_CHANGED)])


def load_batch(path: Path, *, display_name: str | None = None) -> BatchSpec:
    """Read a batch file, every job held; ``display_name`` is how problems name it (the path as typed, say)."""
    source = display_name or path.name
    return _held(_opener(path, source), source, path.stem)


def parse_batch(data: bytes, source: str, *, stem: str | None = None) -> BatchSpec:
    """Check a batch file's bytes; the format comes from ``source``'s extension."""
    return _held(lambda: io.BytesIO(data), source, stem or Path(source).stem)


def open_batch(path: Path, *, display_name: str | None = None, check: RowCheck | None = None) -> StreamedBatch:
    """Check a batch file row by row, and ``check`` its rows a few at a time, holding none of them:
    every problem is raised at once as a ``BatchFileError``. The problems ``check`` finds are
    raised only when the file itself has none, as ``load_batch`` then ``check`` would."""
    source = display_name or path.name
    opener = _opener(path, source)
    reading = _Reading(opener, source, path.stem)
    names = _NameLedger()
    checked = _Checked(source, check)
    for job, row in reading.jobs():
        if job.name is not None:
            names.add(job.name, row.line)
        checked.add(job, row.line)
    problems = reading.problems + _duplicate_names(names, opener, source, path.stem)
    if problems or reading.count == 0:
        raise BatchFileError(_in_order(problems, source))
    checked.finish()
    header = reading.header
    assert header is not None and reading.content_hash is not None
    return StreamedBatch(
        name=header.name,
        source=source,
        content_hash=reading.content_hash,
        priority=header.priority,
        on_uncertain=header.on_uncertain,
        sheets=header.sheets,
        budget=header.budget,
        job_count=reading.count,
        opener=opener,
        stem=path.stem,
    )


def _held(opener: Opener, source: str, stem: str) -> BatchSpec:
    reading = _Reading(opener, source, stem)
    names = _NameLedger()
    jobs: list[JobSpec] = []
    lines: list[int] = []
    for job, row in reading.jobs():
        if job.name is not None:
            names.add(job.name, row.line)
        jobs.append(job)
        lines.append(row.line)
    problems = reading.problems + _duplicate_names(names, opener, source, stem)
    if problems or not jobs:
        raise BatchFileError(_in_order(problems, source))
    header = reading.header
    assert header is not None and reading.content_hash is not None
    return BatchSpec(
        name=header.name,
        source=source,
        content_hash=reading.content_hash,
        priority=header.priority,
        on_uncertain=header.on_uncertain,
        sheets=header.sheets,
        budget=header.budget,
        jobs=tuple(jobs),
        lines=tuple(lines),
    )


def _opener(path: Path, source: str) -> Opener:
    """Opens ``path``, a missing or unreadable file refused as a problem of the file."""

    def open_file() -> IO[bytes]:
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise BatchFileError([Problem(source, None, None, "no such file")]) from None
        except IsADirectoryError:
            raise BatchFileError([Problem(source, None, None, "is a directory, not a batch file")]) from None
        except OSError as error:
            raise BatchFileError([Problem(source, None, None, f"cannot be read: {error.strerror}")]) from None

    return open_file


def _in_order(problems: list[Problem], source: str) -> list[Problem]:
    """Problems by line, each on one line; "no jobs" when a file has neither jobs nor problems."""
    if not problems:
        return [Problem(source, None, None, "the file has no jobs")]
    return sorted(map(_one_line, problems), key=lambda problem: problem.line or 0)


class _Reading:
    """One reading of a batch file from its first byte: its valid jobs in order (``jobs``), then the
    problems met, the header, the number of jobs and the file's SHA-256 (the same file is the same
    batch), all known once ``jobs`` has ended.

    A file that is not UTF-8 or holds nothing is refused with that problem alone, raised from ``jobs``.
    """

    def __init__(self, opener: Opener, source: str, stem: str) -> None:
        self.opener, self.source, self.stem = opener, source, stem
        self.problems: list[Problem] = []
        self.header: _Header | None = None
        self.count = 0
        self.content_hash: str | None = None

    def jobs(self) -> Iterator[tuple[JobSpec, _Row]]:
        with self.opener() as binary:
            parser = _PARSERS.get(Path(self.source).suffix.lower())
            if parser is None:
                suffix = Path(self.source).suffix.lower()
                message = f"unsupported file type {suffix or '(none)'!r}; use {', '.join(sorted(_PARSERS))}"
                raise BatchFileError([Problem(self.source, None, None, message)])
            hasher = hashlib.sha256()
            lines = _not_empty(_text_lines(binary, self.source, hasher), self.source)
            parsed = _Parsed()
            rows = parser(lines, self.source, parsed)
            first = next(rows, None)
            header_problems: list[Problem] = []
            header = self.header = _header(parsed, self.source, self.stem, header_problems)
            row_problems: list[Problem] = []
            for row in chain(() if first is None else (first,), rows):
                job = _job(row, header.defaults, self.source, row_problems)
                if job is not None:
                    self.count += 1
                    yield job, row
            for _ in lines:  # the rest of a file whose parser stopped early: still UTF-8, and hashed
                pass
        self.problems = parsed.problems + header_problems + row_problems
        self.content_hash = hasher.hexdigest()


def _job(row: _Row, defaults: dict[str, Any], source: str, problems: list[Problem]) -> JobSpec | None:
    """The row over the file's defaults as a ``JobSpec``, or None with its problems added."""
    values = {**defaults, **row.values}
    if isinstance(defaults.get("options"), dict) and isinstance(row.values.get("options"), dict):
        values["options"] = {**defaults["options"], **row.values["options"]}
    unstorable = _unstorable(values)
    if unstorable is not None:
        field_name, message = unstorable
        problems.append(Problem(source, row.field_lines.get(field_name, row.line), field_name, message))
        return None
    try:
        return JobSpec.model_validate(values)
    except ValidationError as error:
        problems.extend(_validation_problems(error, row, source))
        return None


def _text_lines(binary: IO[bytes], source: str, hasher: Any) -> Iterator[str]:
    """The file's text a line at a time, line ends kept (``\\n``, ``\\r\\n`` or a lone ``\\r``), each
    line's bytes added to ``hasher``; a byte that is not UTF-8 is refused naming its line. A UTF-8
    sequence never holds the byte ``\\n``, so each piece between them decodes on its own."""
    for number, raw in enumerate(binary, start=1):
        hasher.update(raw)
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            message = f"not UTF-8 text (byte 0x{raw[error.start]:02x}); save the file as UTF-8"
            raise BatchFileError([Problem(source, number, None, message)]) from None
        if "\r" in text:
            yield from io.StringIO(text, newline="")
        else:
            yield text


def _not_empty(lines: Iterator[str], source: str) -> Iterator[str]:
    """``lines`` unchanged, refused as an empty file when nothing but white space is in them; the
    blank lines before the first that is not are held until it comes."""
    blank: list[str] = []
    for line in lines:
        blank.append(line)
        if line.strip():
            break
    else:
        raise BatchFileError([Problem(source, None, None, "the file is empty")])
    yield from blank
    yield from lines


class _NameLedger:
    """The names of a batch's jobs, kept in 8 bytes each (a 64-bit hash) and a line, so a million
    names cost some 16 MB: equal names have equal hashes, and the few hashes seen twice are looked
    at again by name (``_duplicate_names``), as unequal names may share a hash.

    A hash is first looked for in a bitmap of its low bits, sized to keep few false alarms; only
    those already marked are remembered as suspects, to be looked for in full at the end.
    """

    def __init__(self) -> None:
        self.hashes = array("q")
        self.lines = array("q")
        self.bits = bytearray(1 << 10)
        self.suspects: set[int] = set()

    def add(self, name: str, line: int) -> None:
        if len(self.hashes) * 64 >= len(self.bits) * 8:
            self._grow()
        hashed = hash(name)
        self.hashes.append(hashed)
        self.lines.append(line)
        self._mark(hashed)

    def _mark(self, hashed: int) -> None:
        slot = hashed & (len(self.bits) * 8 - 1)
        byte, bit = slot >> 3, 1 << (slot & 7)
        if self.bits[byte] & bit:
            self.suspects.add(hashed)
        else:
            self.bits[byte] |= bit

    def _grow(self) -> None:
        """Four times the bits, marked again from the hashes kept: some 1 bit in 64 stays set."""
        self.bits = bytearray(len(self.bits) * 4)
        self.suspects.clear()
        for hashed in self.hashes:
            self._mark(hashed)

    def shared(self) -> list[list[int]]:
        """The lines of each hash held by more than one name, in file order."""
        if not self.suspects:
            return []
        lines: dict[int, list[int]] = defaultdict(list)
        for hashed, line in zip(self.hashes, self.lines, strict=True):
            if hashed in self.suspects:
                lines[hashed].append(line)
        return [group for group in lines.values() if len(group) > 1]


def _duplicate_names(names: _NameLedger, opener: Opener, source: str, stem: str) -> list[Problem]:
    """A name given to more than one job, refused at each later line, naming the first: two jobs of
    one name would store their pictures under one key. The rows whose name's hash is shared are read
    again to compare the names themselves."""
    shared = names.shared()
    if not shared:
        return []
    suspect_lines = {line for group in shared for line in group}
    first_line_of_name: dict[str, int] = {}
    problems = []
    for job, row in _Reading(opener, source, stem).jobs():
        if row.line not in suspect_lines or job.name is None:
            continue
        first = first_line_of_name.setdefault(job.name, row.line)
        if first != row.line:
            line = row.field_lines.get("name", row.line)
            problems.append(Problem(source, line, "name", f"{job.name!r} is already the name of line {first}"))
    return problems


class _Checked:
    """A batch's own checks (``RowCheck``) run over its jobs a chunk at a time; ``finish`` raises what
    they found. A ``ConfigError`` of a check (the accounts file unreadable, say) stops the checking
    and is raised by ``finish``, so a file with problems of its own is refused for those first."""

    def __init__(self, source: str, check: RowCheck | None) -> None:
        self.source, self.check = source, check
        self.jobs: list[JobSpec] = []
        self.lines: list[int] = []
        self.problems: list[Problem] = []
        self.error: ConfigError | None = None

    def add(self, job: JobSpec, line: int) -> None:
        if self.check is None or self.error is not None:
            return
        self.jobs.append(job)
        self.lines.append(line)
        if len(self.jobs) >= _CHECK_CHUNK:
            self._run()

    def _run(self) -> None:
        if self.check is not None and self.error is None and self.jobs:
            piece = BatchSpec.model_construct(name="", source=self.source, content_hash="", priority=0,
                                              jobs=tuple(self.jobs), lines=tuple(self.lines))  # fmt: skip
            try:
                self.problems += self.check(piece)
            except ConfigError as error:
                self.error = error
        self.jobs, self.lines = [], []

    def finish(self) -> None:
        self._run()
        if self.error is not None:
            raise self.error
        if self.problems:
            raise BatchFileError(sorted(self.problems, key=lambda problem: problem.line or 0))


# CSV ---------------------------------------------------------------------------------------------


def _parse_csv(lines: Iterable[str], source: str, parsed: _Parsed) -> Iterator[_Row]:
    reader = csv.reader(lines)
    try:
        header = [column.strip() for column in next(reader)]
    except csv.Error as error:
        parsed.problems.append(Problem(source, 1, None, f"not valid CSV: {error}"))
        return
    separator = _other_separator(header)
    if separator:
        parsed.problems.append(Problem(source, 1, None, f"the header looks {separator}-separated; use commas"))
        return
    for column in header:
        if not column:
            parsed.problems.append(Problem(source, 1, None, "a column has no name in the header"))
        elif column not in _JOB_FIELDS and not column.startswith(_OPTION_PREFIX):
            parsed.problems.append(Problem(source, 1, column, _unknown_field(column)))
    if "prompt" not in header:
        parsed.problems.append(Problem(source, 1, "prompt", "the header has no prompt column"))
    duplicated = sorted(column for column, count in Counter(header).items() if column and count > 1)
    for column in duplicated:
        parsed.problems.append(Problem(source, 1, column, "the header names this column twice"))
    if parsed.problems:
        return

    end_of_previous = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            parsed.problems.append(Problem(source, end_of_previous + 1, None, f"not valid CSV: {error}"))
            break
        line, end_of_previous = end_of_previous + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(header):
            message = f"{len(cells)} cells but the header has {len(header)} columns"
            parsed.problems.append(Problem(source, line, None, message))
            continue
        yield _Row(line, _csv_values(dict(zip(header, cells, strict=False))))


def _other_separator(header: list[str]) -> str | None:
    """``semicolon`` or ``tab`` when the header is one unknown column holding them: a spreadsheet set to a
    locale that writes ``;`` (or a tab-separated export), which would otherwise read as one odd field."""
    if len(header) != 1 or header[0] in _JOB_FIELDS:
        return None
    counts = {"semicolon": header[0].count(";"), "tab": header[0].count("\t")}
    separator = max(counts, key=counts.__getitem__)
    return separator if counts[separator] else None


def _csv_values(cells: Mapping[str, str]) -> dict[str, Any]:
    """Empty cells are unset; ``references`` is a ``|``-separated list; ``options.x`` columns nest."""
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for column, cell in cells.items():
        cell = cell.strip()
        if not cell:
            continue
        if column.startswith(_OPTION_PREFIX):
            options[column.removeprefix(_OPTION_PREFIX)] = _scalar(cell)
        elif column == "references":
            values[column] = [part.strip() for part in cell.split(_REFERENCE_SEPARATOR) if part.strip()]
        else:
            values[column] = cell
    if options:
        values["options"] = options
    return values


def _scalar(cell: str) -> Any:
    """An option cell as a YAML file's would be read (``7`` a number, ``true`` a flag, ``16:9`` text), else the
    text itself; a cell such as ``[[[[...`` is text too, however deep."""
    try:
        value = yaml.load(cell, Loader=_Loader)
    except (yaml.YAMLError, RecursionError):
        return cell
    return value if isinstance(value, bool | int | float) else cell


# YAML --------------------------------------------------------------------------------------------


def _parse_yaml(lines: Iterable[str], source: str, parsed: _Parsed) -> Iterator[_Row]:
    """The document is read whole, then its jobs yielded: YAML's structure is the whole file's."""
    text = "".join(lines)
    line_at = _line_finder(text)
    try:
        root, document = _compose(text)
    except yaml.YAMLError as error:
        parsed.problems.append(_yaml_problem(error, text, source, line_at))
        return
    except RecursionError:
        parsed.problems.append(Problem(source, None, None, f"not valid YAML: {_NESTED_TOO_DEEP}"))
        return

    jobs: Any
    jobs_node: yaml.Node | None
    if isinstance(document, list) and isinstance(root, yaml.SequenceNode):
        jobs, jobs_node = document, root
    elif isinstance(document, dict) and isinstance(root, yaml.MappingNode):
        lines = _key_lines(root, line_at)
        for key in document:
            if key != "jobs" and key not in _HEADER_FIELDS:
                parsed.problems.append(Problem(source, lines.get(key), str(key), _unknown_header_field(key)))
        parsed.header = {key: document[key] for key in _HEADER_FIELDS if key in document}
        parsed.header_lines = {key: lines[key] for key in _HEADER_FIELDS if key in lines}
        jobs, jobs_node = document.get("jobs"), _value_node(root, "jobs")
        if not isinstance(jobs, list) or not isinstance(jobs_node, yaml.SequenceNode):
            parsed.problems.append(Problem(source, lines.get("jobs"), "jobs", "expected a list of jobs"))
            return
    else:
        line = line_at(root.start_mark.index) if root is not None else None
        parsed.problems.append(Problem(source, line, None, "expected a mapping with 'jobs', or a list of jobs"))
        return

    for value, node in zip(jobs, jobs_node.value, strict=True):
        line = line_at(node.start_mark.index)
        if not isinstance(value, dict) or not isinstance(node, yaml.MappingNode):
            parsed.problems.append(Problem(source, line, None, "a job must be a mapping of fields"))
            continue
        yield _Row(line, {str(k): v for k, v in value.items()}, _key_lines(node, line_at))


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The root node (for lines) and the document; the loader's reader already refuses control characters."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


class _Loader(yaml.SafeLoader):
    """Safe loading, except that ``16:9`` stays text: YAML 1.1 reads it as the base-60 number 969."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    try:
        return loader.construct_yaml_int(node)
    except ValueError:
        raise yaml.constructor.ConstructorError(None, None, _NUMBER_TOO_LONG, node.start_mark) from None


_Loader.add_constructor(_INT_TAG, _construct_int)


def _yaml_problem(error: yaml.YAMLError, text: str, source: str, line_at: Callable[[int], int]) -> Problem:
    """The line a person should look at: where the problem is, or where an unclosed thing opened."""
    if isinstance(error, yaml.reader.ReaderError):
        message = f"not valid YAML: the character U+{error.character:04X} is not allowed"
        return Problem(source, line_at(error.position), None, message)
    problem_mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    mark = problem_mark
    if context_mark is not None and (problem_mark is None or problem_mark.index >= len(text.rstrip())):
        mark = context_mark
    reason = " ".join(str(part) for part in (getattr(error, "context", None), getattr(error, "problem", None)) if part)
    line = line_at(mark.index) if mark is not None else None
    return Problem(source, line, None, f"not valid YAML: {reason or error}")


def _key_lines(node: yaml.MappingNode, line_at: Callable[[int], int]) -> dict[str, int]:
    return {str(key.value): line_at(key.start_mark.index) for key, _ in node.value if isinstance(key, yaml.ScalarNode)}


def _line_finder(text: str) -> Callable[[int], int]:
    """The line of a character index as an editor counts lines; YAML's own marks also count NEL, U+2028
    and U+2029 as line ends, which would point past the end of the file. The end of the file (where
    ``---`` leaves an empty document, say) is on its last line."""
    starts = [match.end() for match in _NEWLINE.finditer(text)]
    last = len(starts) + (not starts or starts[-1] < len(text))
    return lambda index: min(bisect.bisect_right(starts, index) + 1, last)


def _value_node(node: yaml.MappingNode, name: str) -> yaml.Node | None:
    """The node of a key's value; the last, as the loader keeps the last of a key written twice."""
    values = [value for key, value in node.value if isinstance(key, yaml.ScalarNode) and key.value == name]
    return values[-1] if values else None


# JSONL -------------------------------------------------------------------------------------------


def _parse_jsonl(lines: Iterable[str], source: str, parsed: _Parsed) -> Iterator[_Row]:
    """One job object a line; the first line may be ``{"batch": {...}}`` with the header fields."""
    seen_content = False
    for line, ended in enumerate(lines, start=1):
        raw = ended.rstrip("\r\n")
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            parsed.problems.append(Problem(source, line, None, f"not valid JSON: {error.msg} (column {error.colno})"))
            seen_content = True
            continue
        except (ValueError, RecursionError) as error:
            message = _NESTED_TOO_DEEP if isinstance(error, RecursionError) else _NUMBER_TOO_LONG
            parsed.problems.append(Problem(source, line, None, f"not valid JSON: {message}"))
            seen_content = True
            continue
        seen_content_before, seen_content = seen_content, True
        if not isinstance(value, dict):
            parsed.problems.append(Problem(source, line, None, "expected a JSON object"))
        elif "batch" in value and not seen_content_before:
            _jsonl_header(value, line, source, parsed)
        elif "batch" in value:
            parsed.problems.append(Problem(source, line, "batch", "the batch header must be the first line"))
        else:
            yield _Row(line, value)


def _jsonl_header(value: dict[str, Any], line: int, source: str, parsed: _Parsed) -> None:
    header = value["batch"]
    if len(value) > 1 or not isinstance(header, dict):
        parsed.problems.append(Problem(source, line, "batch", 'expected {"batch": {"name": ..., "defaults": ...}}'))
        return
    for key in header:
        if key not in _HEADER_FIELDS:
            parsed.problems.append(Problem(source, line, f"batch.{key}", _unknown_header_field(key)))
    parsed.header = {key: header[key] for key in _HEADER_FIELDS if key in header}
    parsed.header_lines = dict.fromkeys(parsed.header, line)


# Shared ------------------------------------------------------------------------------------------

_PARSERS: dict[str, Callable[[Iterable[str], str, _Parsed], Iterator[_Row]]] = {
    ".csv": _parse_csv,
    ".yaml": _parse_yaml,
    ".yml": _parse_yaml,
    ".jsonl": _parse_jsonl,
}


def _header(parsed: _Parsed, source: str, stem: str, problems: list[Problem]) -> _Header:
    """The batch's fields from the header the parser found, each problem with them added to ``problems``."""
    return _Header(
        name=_batch_name(parsed, source, stem, problems),
        priority=_priority(parsed, source, problems),
        on_uncertain=_on_uncertain(parsed, source, problems),
        sheets=_sheets(parsed, source, problems),
        budget=_budget(parsed, source, problems),
        defaults=_defaults(parsed, source, problems),
    )


def _batch_name(parsed: _Parsed, source: str, stem: str, problems: list[Problem]) -> str:
    """The header's name as given, else the file's name made safe for a storage folder."""
    if "name" not in parsed.header:
        return re.sub(r"[^A-Za-z0-9._\-]+", "-", stem).strip("-.")[:64] or "batch"
    name = parsed.header["name"]
    if not isinstance(name, str) or not _BATCH_NAME.fullmatch(name):
        message = f"{name!r} is not a usable batch name: up to 64 letters, digits, '.', '_' and '-'"
        problems.append(Problem(source, parsed.header_lines.get("name"), "name", message))
        return stem
    return name


def _priority(parsed: _Parsed, source: str, problems: list[Problem]) -> int:
    priority = parsed.header.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not _PRIORITY_MIN <= priority <= _PRIORITY_MAX:
        message = f"must be a whole number from {_PRIORITY_MIN:,} to {_PRIORITY_MAX:,}"
        problems.append(Problem(source, parsed.header_lines.get("priority"), "priority", message))
        return 0
    return priority


def _on_uncertain(parsed: _Parsed, source: str, problems: list[Problem]) -> str | None:
    policy = parsed.header.get("on_uncertain")
    if policy is None or policy in _POLICIES:
        return policy
    message = f"{policy!r} is not a policy for lost answers; use {' or '.join(_POLICIES)}"
    problems.append(Problem(source, parsed.header_lines.get("on_uncertain"), "on_uncertain", message))
    return None


def _budget(parsed: _Parsed, source: str, problems: list[Problem]) -> int | None:
    """Credits the batch may spend: a whole number above 0, or absent for no cap."""
    budget = parsed.header.get("budget")
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        message = f"{budget!r} is not a budget: a whole number of credits above 0"
        problems.append(Problem(source, parsed.header_lines.get("budget"), "budget", message))
        return None
    return budget


def _sheets(parsed: _Parsed, source: str, problems: list[Problem]) -> SheetSettings:
    settings = parsed.header.get("sheets", {})
    line = parsed.header_lines.get("sheets")
    if not isinstance(settings, dict):
        problems.append(Problem(source, line, "sheets", "expected a mapping: padding (pixels), trim (true or false)"))
        return SheetSettings()
    try:
        return SheetSettings.model_validate(settings)
    except ValidationError as error:
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            problems.append(Problem(source, line, f"sheets.{where}" if where else "sheets", item["msg"]))
        return SheetSettings()


def _defaults(parsed: _Parsed, source: str, problems: list[Problem]) -> dict[str, Any]:
    defaults = parsed.header.get("defaults", {})
    line = parsed.header_lines.get("defaults")
    if not isinstance(defaults, dict):
        problems.append(Problem(source, line, "defaults", "expected a mapping of job fields"))
        return {}
    for key in defaults:
        if key not in _JOB_FIELDS:
            problems.append(Problem(source, line, f"defaults.{key}", _unknown_field(str(key))))
    return {key: value for key, value in defaults.items() if key in _JOB_FIELDS}


def _unstorable(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first field that could not be stored as JSON text and sent on, and why; None when all can."""
    count = 0
    for name, value in values.items():
        if isinstance(value, str) and count < _MAX_VALUES and "\x00" not in value and not _SURROGATE.search(value):
            count += 1  # the common case, a plain text field, without the walk below
            continue
        stack = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            count += 1
            if count > _MAX_VALUES:
                return name, f"expands to more than {_MAX_VALUES:,} values (YAML aliases of aliases?)"
            if isinstance(item, str) and "\x00" in item:
                return name, "contains a NUL character"
            if isinstance(item, str) and _SURROGATE.search(item):
                return name, "contains a lone surrogate (an escape such as \\ud800), which is not a character"
            if isinstance(item, bytes):
                return name, "is binary data (!!binary), not text"
            if isinstance(item, list | dict):
                if depth > _MAX_DEPTH:
                    return name, f"nests lists or mappings more than {_MAX_DEPTH} deep (or a YAML alias inside itself)"
                children = item if isinstance(item, list) else [*item, *item.values()]
                stack.extend((child, depth + 1) for child in children)
    return None


def _one_line(problem: Problem) -> Problem:
    """A field as the file spelled it, escaped if it holds a line break or an invisible character, so that a
    problem is one line of ``<file>.errors.txt`` and shows what is there."""
    if problem.field is None or problem.field.isprintable():
        return problem
    return replace(problem, field=repr(problem.field)[1:-1])


def _validation_problems(error: ValidationError, row: _Row, source: str) -> list[Problem]:
    problems = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        field_name = location[0] if location else None
        if field_name == "options" and len(location) > 1:
            field_name = f"options.{location[1]}"
        line = row.field_lines.get(location[0], row.line) if location else row.line
        if item["type"] == "extra_forbidden":
            message = _unknown_field(location[0])
        elif item["type"] == "missing":
            message = "is required"
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(Problem(source, line, field_name, message))
    return problems


def _unknown_field(name: str) -> str:
    return f"unknown field {name!r}; known: {', '.join(_JOB_FIELDS)}, and options.<key> for provider options"


def _unknown_header_field(name: object) -> str:
    return f"unknown batch field {name!r}; known: {', '.join(_HEADER_FIELDS)}, jobs"
