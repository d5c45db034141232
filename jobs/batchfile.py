"""Batch files (CSV, YAML, JSONL) into a checked ``BatchSpec``, or every problem in them at once.

The whole file is read and checked before anything is written, so a refused file leaves no row
behind; and every problem names the file, the line and the field, because the person fixing a
5,000-row catalog needs to find line 4,312 rather than be told "invalid input".

Each format ends in the same place: a list of rows, each a plain mapping with the source line of the
row and of each of its fields, merged over the file's defaults and validated as a ``JobSpec``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from jobs.errors import BatchFileError, Problem
from jobs.spec import BatchSpec, JobSpec
from jobs.states import UncertainPolicy

_BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
_HEADER_FIELDS = ("name", "priority", "on_uncertain", "defaults")
_POLICIES = tuple(policy.value for policy in UncertainPolicy)
_JOB_FIELDS = tuple(JobSpec.model_fields)
_OPTION_PREFIX = "options."
_REFERENCE_SEPARATOR = "|"
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


@dataclass
class _Row:
    """One job as the file wrote it, before validation."""

    line: int
    values: dict[str, Any]
    field_lines: dict[str, int] = field(default_factory=dict)


@dataclass
class _Parsed:
    """What a format parser found: the rows, the header, and any problems it could not get past."""

    rows: list[_Row] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    header_lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def load_batch(path: Path, *, display_name: str | None = None) -> BatchSpec:
    """Read a batch file; ``display_name`` is how problems name it (the path as typed, say)."""
    source = display_name or path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BatchFileError([Problem(source, None, None, "no such file")]) from None
    except IsADirectoryError:
        raise BatchFileError([Problem(source, None, None, "is a directory, not a batch file")]) from None
    except OSError as error:
        raise BatchFileError([Problem(source, None, None, f"cannot be read: {error.strerror}")]) from None
    return parse_batch(data, source, stem=path.stem)


def parse_batch(data: bytes, source: str, *, stem: str | None = None) -> BatchSpec:
    """Check a batch file's bytes; the format comes from ``source``'s extension."""
    suffix = Path(source).suffix.lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        message = f"unsupported file type {suffix or '(none)'!r}; use {', '.join(sorted(_PARSERS))}"
        raise BatchFileError([Problem(source, None, None, message)])
    parsed = parser(_decode(data, source), source)
    return _build(parsed, source, data, stem or Path(source).stem)


def _decode(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise BatchFileError(
            [Problem(source, line, None, f"not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as UTF-8")]
        ) from None
    if not text.strip():
        raise BatchFileError([Problem(source, None, None, "the file is empty")])
    return text


# CSV ---------------------------------------------------------------------------------------------


def _parse_csv(text: str, source: str) -> _Parsed:
    parsed = _Parsed()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [column.strip() for column in next(reader)]
    except csv.Error as error:
        parsed.problems.append(Problem(source, 1, None, f"not valid CSV: {error}"))
        return parsed
    for column in header:
        if not column:
            parsed.problems.append(Problem(source, 1, None, "a column has no name in the header"))
        elif column not in _JOB_FIELDS and not column.startswith(_OPTION_PREFIX):
            parsed.problems.append(Problem(source, 1, column, _unknown_field(column)))
    if "prompt" not in header:
        parsed.problems.append(Problem(source, 1, "prompt", "the header has no prompt column"))
    duplicated = sorted({column for column in header if column and header.count(column) > 1})
    for column in duplicated:
        parsed.problems.append(Problem(source, 1, column, "the header names this column twice"))
    if parsed.problems:
        return parsed

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
        parsed.rows.append(_Row(line, _csv_values(dict(zip(header, cells, strict=False)))))
    return parsed


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
    """An option cell as YAML would read it (``7`` a number, ``true`` a flag), else the text itself."""
    try:
        value = yaml.safe_load(cell)
    except yaml.YAMLError:
        return cell
    return value if isinstance(value, bool | int | float) else cell


# YAML --------------------------------------------------------------------------------------------


def _parse_yaml(text: str, source: str) -> _Parsed:
    parsed = _Parsed()
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        document = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as error:
        parsed.problems.append(_yaml_problem(error, text, source))
        return parsed
    finally:
        loader.dispose()

    jobs: Any
    jobs_node: yaml.Node | None
    if isinstance(document, list) and isinstance(root, yaml.SequenceNode):
        jobs, jobs_node = document, root
    elif isinstance(document, dict) and isinstance(root, yaml.MappingNode):
        lines = _key_lines(root)
        for key in document:
            if key != "jobs" and key not in _HEADER_FIELDS:
                parsed.problems.append(Problem(source, lines.get(key), str(key), _unknown_header_field(key)))
        parsed.header = {key: document[key] for key in _HEADER_FIELDS if key in document}
        parsed.header_lines = {key: lines[key] for key in _HEADER_FIELDS if key in lines}
        jobs, jobs_node = document.get("jobs"), _value_node(root, "jobs")
        if not isinstance(jobs, list) or not isinstance(jobs_node, yaml.SequenceNode):
            parsed.problems.append(Problem(source, lines.get("jobs"), "jobs", "expected a list of jobs"))
            return parsed
    else:
        line = root.start_mark.line + 1 if root is not None else None
        parsed.problems.append(Problem(source, line, None, "expected a mapping with 'jobs', or a list of jobs"))
        return parsed

    for value, node in zip(jobs, jobs_node.value, strict=True):
        line = node.start_mark.line + 1
        if not isinstance(value, dict) or not isinstance(node, yaml.MappingNode):
            parsed.problems.append(Problem(source, line, None, "a job must be a mapping of fields"))
            continue
        parsed.rows.append(_Row(line, {str(k): v for k, v in value.items()}, _key_lines(node)))
    return parsed


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
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _yaml_problem(error: yaml.YAMLError, text: str, source: str) -> Problem:
    """The line a person should look at: where the problem is, or where an unclosed thing opened."""
    problem_mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    mark = problem_mark
    if context_mark is not None and (problem_mark is None or problem_mark.index >= len(text.rstrip())):
        mark = context_mark
    reason = " ".join(str(part) for part in (getattr(error, "context", None), getattr(error, "problem", None)) if part)
    return Problem(source, mark.line + 1 if mark is not None else None, None, f"not valid YAML: {reason or error}")


def _key_lines(node: yaml.MappingNode) -> dict[str, int]:
    return {str(key.value): key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}


def _value_node(node: yaml.MappingNode, name: str) -> yaml.Node | None:
    return next((value for key, value in node.value if isinstance(key, yaml.ScalarNode) and key.value == name), None)


# JSONL -------------------------------------------------------------------------------------------


def _parse_jsonl(text: str, source: str) -> _Parsed:
    """One job object a line; the first line may be ``{"batch": {...}}`` with the header fields."""
    parsed = _Parsed()
    seen_content = False
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            parsed.problems.append(Problem(source, line, None, f"not valid JSON: {error.msg} (column {error.colno})"))
            seen_content = True
            continue
        if not isinstance(value, dict):
            parsed.problems.append(Problem(source, line, None, "expected a JSON object"))
        elif "batch" in value and not seen_content:
            _jsonl_header(value, line, source, parsed)
        elif "batch" in value:
            parsed.problems.append(Problem(source, line, "batch", "the batch header must be the first line"))
        else:
            parsed.rows.append(_Row(line, value))
        seen_content = True
    return parsed


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

_PARSERS: dict[str, Callable[[str, str], _Parsed]] = {
    ".csv": _parse_csv,
    ".yaml": _parse_yaml,
    ".yml": _parse_yaml,
    ".jsonl": _parse_jsonl,
}


def _build(parsed: _Parsed, source: str, data: bytes, stem: str) -> BatchSpec:
    problems = list(parsed.problems)
    name = _batch_name(parsed, source, stem, problems)
    priority = _priority(parsed, source, problems)
    on_uncertain = _on_uncertain(parsed, source, problems)
    defaults = _defaults(parsed, source, problems)

    jobs: list[JobSpec] = []
    lines: list[int] = []
    first_line_of_name: dict[str, int] = {}
    for row in parsed.rows:
        values = {**defaults, **row.values}
        if isinstance(defaults.get("options"), dict) and isinstance(row.values.get("options"), dict):
            values["options"] = {**defaults["options"], **row.values["options"]}
        try:
            job = JobSpec.model_validate(values)
        except ValidationError as error:
            problems.extend(_validation_problems(error, row, source))
            continue
        if job.name is not None:
            first = first_line_of_name.setdefault(job.name, row.line)
            if first != row.line:
                line = row.field_lines.get("name", row.line)
                problems.append(Problem(source, line, "name", f"{job.name!r} is already the name of line {first}"))
                continue
        jobs.append(job)
        lines.append(row.line)
    if not parsed.rows and not problems:
        problems.append(Problem(source, None, None, "the file has no jobs"))
    if problems:
        raise BatchFileError(sorted(problems, key=lambda p: p.line or 0))
    return BatchSpec(
        name=name,
        source=source,
        content_hash=hashlib.sha256(data).hexdigest(),
        priority=priority,
        on_uncertain=on_uncertain,
        jobs=tuple(jobs),
        lines=tuple(lines),
    )


def _batch_name(parsed: _Parsed, source: str, stem: str, problems: list[Problem]) -> str:
    """The header's name as given, else the file's name made safe for a storage folder."""
    if "name" not in parsed.header:
        return re.sub(r"[^A-Za-z0-9._\-]+", "-", stem).strip("-.")[:64] or "batch"
    name = parsed.header["name"]
    if not isinstance(name, str) or not _BATCH_NAME.match(name):
        message = f"{name!r} is not a usable batch name: up to 64 letters, digits, '.', '_' and '-'"
        problems.append(Problem(source, parsed.header_lines.get("name"), "name", message))
        return stem
    return name


def _priority(parsed: _Parsed, source: str, problems: list[Problem]) -> int:
    priority = parsed.header.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        problems.append(Problem(source, parsed.header_lines.get("priority"), "priority", "must be a whole number"))
        return 0
    return priority


def _on_uncertain(parsed: _Parsed, source: str, problems: list[Problem]) -> str | None:
    policy = parsed.header.get("on_uncertain")
    if policy is None or policy in _POLICIES:
        return policy
    message = f"{policy!r} is not a policy for lost answers; use {' or '.join(_POLICIES)}"
    problems.append(Problem(source, parsed.header_lines.get("on_uncertain"), "on_uncertain", message))
    return None


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
