"""Hostile batch files, by the thousand: whatever bytes arrive, ``load_batch`` either refuses them with
problems a person can act on (file, line, field) or returns a batch that can be written, and a refused
file writes no row. A batch the strategies build from known-good parts comes back as it was written."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from jobs.batchfile import load_batch
from jobs.db import make_engine, migrate
from jobs.errors import BatchFileError
from jobs.models import Batch, Job
from jobs.producer import produce
from jobs.spec import PROVIDERS, BatchSpec, JobSpec

FORMATS = (".csv", ".yaml", ".jsonl")
JOB_FIELDS = tuple(JobSpec.model_fields)
NEWLINES = ("\n", "\r\n", "\r")
BOM = "\ufeff"
ODD = (
    "\x00", "\u200e", "\u200f", "\u202e", "\u2066", BOM, "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c",
    "\x1e", "\x7f", "\r", "\n", "\r\n", "\t", " ", "\u00a0", "\u3000", ";", ",", '"', "'", "|", ":", "#", "-",
    "{", "}", "[", "]", "&", "*", "!", "%", "@", "`", "\\", "\\ud800", "\\u0000", "\ufffe", "\uffff",
    "\U0010ffff", "\U0001f600", "e\u0301", "\u05d0\u05d1", "\u0627\u0644",
)
"""Characters that have broken text parsers somewhere: controls, direction marks, line separators other
than CR and LF, byte-order marks, non-characters, and the syntax of the three formats."""

characters = st.characters(exclude_categories=("Cs",))
odd_text = st.lists(st.sampled_from(ODD) | st.text(characters, max_size=4), max_size=12).map("".join)


def bounded(count: int) -> settings:
    """``count`` examples, no deadline (a 2-core CI machine is slow), and no example database left in the
    working tree; a failure prints the example and the seed to replay it."""
    return settings(max_examples=count, deadline=None, database=None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example (hypothesis runs many examples per test, in one fixture scope)."""
    return tmp_path_factory.mktemp("batches")


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 'genq.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


# What a person sees -------------------------------------------------------------------------------


def line_count(data: bytes) -> int:
    """Lines as an editor shows them: ended by CRLF, LF or a lone CR; a last line needs no ending."""
    pieces = re.split(rb"\r\n|\r|\n", data)
    return len(pieces) - (pieces[-1] == b"")


def drop(folder: Path, suffix: str, data: bytes | str) -> Path:
    path = folder / f"catalog{suffix}"
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


def display_name(path: Path) -> str:
    return f"inbox/{path.name}"


def load_or_refusal(path: Path) -> BatchSpec | BatchFileError:
    """The batch, or the refusal; anything else raised is a traceback the person would see, and fails."""
    try:
        return load_batch(path, display_name=display_name(path))
    except BatchFileError as refusal:
        return refusal


def assert_refusal_names_file_and_lines(refusal: BatchFileError, path: Path) -> None:
    lines = line_count(path.read_bytes())
    assert refusal.problems
    for problem in refusal.problems:
        assert problem.file == display_name(path)
        assert str(problem).startswith(f"{display_name(path)}:")
        assert problem.line is None or 1 <= problem.line <= max(lines, 1), (problem, lines)
        assert problem.message.strip()
        assert not re.search(r"[\r\n\x85\u2028\u2029]", str(problem)), problem  # one problem a line in errors.txt


def assert_batch_can_be_written(spec: BatchSpec, path: Path) -> None:
    """Each job travels as JSON in UTF-8 (the database's spec column, the provider's request)."""
    data = path.read_bytes()
    lines = line_count(data)
    assert spec.jobs and len(spec.jobs) == len(spec.lines)
    assert list(spec.lines) == sorted(spec.lines)
    assert spec.lines[0] >= 1 and spec.lines[-1] <= lines
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}", spec.name), spec.name  # a storage folder
    assert -(2**31) <= spec.priority < 2**31  # a 32-bit integer column
    for job in spec.jobs:
        stored = json.dumps(job.model_dump(mode="json"), ensure_ascii=False)
        stored.encode("utf-8")
        assert len(stored) <= 6 * len(data) + 1000  # no alias expands a small file into a huge row
        assert "\\u0000" not in stored and "\x00" not in stored  # PostgreSQL keeps no NUL in text or JSON
    assert spec.model_dump_json()


def assert_refused_or_loaded(path: Path) -> BatchSpec | BatchFileError:
    outcome = load_or_refusal(path)
    if isinstance(outcome, BatchFileError):
        assert_refusal_names_file_and_lines(outcome, path)
    else:
        assert_batch_can_be_written(outcome, path)
    return outcome


# Files from known-good parts ----------------------------------------------------------------------

prompts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=40).map(
    str.strip
).filter(bool)
"""Any text a person could mean (a NUL is refused: PostgreSQL cannot store one)."""
odd_prompts = odd_text.map(str.strip).filter(lambda text: bool(text) and "\\u" not in text and "\x00" not in text)
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,8}(/[A-Za-z0-9][A-Za-z0-9._\-]{0,8}){0,2}", fullmatch=True)
jobs = st.lists(
    st.fixed_dictionaries(
        {"prompt": prompts | odd_prompts, "provider": st.sampled_from(PROVIDERS)},
        optional={"name": names.filter(lambda name: ".." not in name), "count": st.integers(1, 4)},
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda job: job.get("name", object()),
)


def as_file(
    rows: list[dict[str, Any]], suffix: str, *, newline: str = "\n", bom: str = "", wrapped: bool = True,
    escaped: bool = False,
) -> bytes:
    """``rows`` as a person's tools would write them: a spreadsheet's CSV, ``yaml.safe_dump``, ``json.dumps``
    (``wrapped`` puts YAML jobs under ``jobs:``; ``escaped`` writes only ASCII)."""
    if suffix == ".csv":
        buffer = io.StringIO(newline="")
        # Python's writer quotes a cell with a line end only if that line end is its own terminator.
        quoting = csv.QUOTE_MINIMAL if newline == "\r\n" else csv.QUOTE_ALL
        columns = ["prompt", "provider", "name", "count"]
        writer = csv.DictWriter(buffer, columns, lineterminator=newline, quoting=quoting)
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    elif suffix == ".yaml":
        document = {"jobs": rows} if wrapped else rows
        text = yaml.safe_dump(document, allow_unicode=not escaped, sort_keys=False, line_break=newline, width=10**6)
    else:
        text = "".join(json.dumps(row, ensure_ascii=escaped) + newline for row in rows)
    return (bom + text).encode()


@st.composite
def written(draw: st.DrawFn, rows: list[dict[str, Any]], suffix: str) -> bytes:
    """``rows`` with any line ending, maybe a byte-order mark, in any of the format's styles."""
    data = as_file(
        rows, suffix, newline=draw(st.sampled_from(NEWLINES)), bom=draw(st.sampled_from(("", BOM))),
        wrapped=draw(st.booleans()), escaped=draw(st.booleans()),
    )
    # PyYAML's emitter leaves NEL and U+2028 raw inside single quotes, where YAML reads them as a space.
    assume(suffix != ".yaml" or _rows_of(yaml.safe_load(data.decode("utf-8-sig"))) == rows)
    return data


def _rows_of(document: Any) -> Any:
    return document["jobs"] if isinstance(document, dict) else document


@st.composite
def good_files(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]], bytes]:
    suffix = draw(st.sampled_from(FORMATS))
    rows = draw(jobs)
    return suffix, rows, draw(written(rows, suffix))


# Files from hostile parts -------------------------------------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | odd_text | st.sampled_from(PROVIDERS) | prompts
)
keys = st.sampled_from((*JOB_FIELDS, "jobs", "batch", "defaults", "priority", "on_uncertain")) | odd_text
structures = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=24
)
job_like = st.dictionaries(keys, structures, max_size=6) | st.fixed_dictionaries(
    {"prompt": structures, "provider": st.sampled_from(PROVIDERS) | structures},
    optional={key: structures for key in JOB_FIELDS if key not in ("prompt", "provider")},
)
SNIPPETS = {
    ".csv": (
        "prompt", "provider", "name", "options.quality", "references", "gencraft", "a boot", "sku-1", '"',
        '""', ",", ";", "\t", "\r", "\n", "\r\n", BOM, "\x00", "1:30", "options.",
    ),
    ".yaml": (
        "jobs:\n", "  - ", "prompt: a boot\n", "provider: gencraft\n", "    ", "name: x\n", "name: x\n",
        "defaults: {provider: gencraft}\n", "priority: ", "99999999999999999999\n", "&a ", "*a",
        "<<: *a\n", "? [a, b]\n: c\n", "!!binary /w==\n", "!!python/object:os.system\n", "options: ", "{", "}",
        "[", "]", "- ", "---\n", "...\n", "%YAML 1.1\n", "\t", "'", '"', "\\ud800", "\x85", "\u2028", BOM,
        "\r", "\n", ": ", "2001-01-01\n", ".nan\n", "jobs: []\n",
    ),
    ".jsonl": (
        '{"prompt": "a", "provider": "gencraft"}', '{"batch": {"name": "b", "priority": 1}}', '{"batch": ',
        '"options": {"x": ', "NaN", "Infinity", '"\\ud800"', '"\\u0000"', '"\u2028"',
        "{", "}", "[", "]", ",", ":", '"', "\n", "\r\n", "\r", BOM, "null", "true", "1e999", '"prompt"',
    ),
}


@st.composite
def hostile_files(draw: st.DrawFn) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(FORMATS))
    kind = draw(st.sampled_from(("bytes", "text", "snippets", "spliced", "structure")))
    if kind == "bytes":
        return suffix, draw(st.binary(max_size=512))
    if kind == "text":
        return suffix, draw(odd_text).encode("utf-8")
    if kind == "snippets":
        long_numbers = st.integers(4000, 5000).map(lambda digits: "9" * digits)
        nests = st.integers(1, 3000).map(lambda depth: "[" * depth)
        parts = draw(st.lists(st.sampled_from(SNIPPETS[suffix]) | odd_text | long_numbers | nests, max_size=30))
        return suffix, "".join(parts).encode("utf-8")
    if kind == "spliced":
        good = draw(good_files())[2]
        at = draw(st.integers(0, len(good)))
        return suffix, good[:at] + draw(st.binary(max_size=8) | odd_text.map(str.encode)) + good[at:]
    return suffix, draw(dumped_structures(suffix))


@st.composite
def dumped_structures(draw: st.DrawFn, suffix: str) -> bytes:
    """Nested lists, mappings and scalars, dumped as the format would be; CSV gets them as cells."""
    if suffix == ".yaml":
        document = draw(structures | st.fixed_dictionaries({"jobs": st.lists(job_like, max_size=4)}, optional={
            "name": structures, "priority": structures, "defaults": structures, "on_uncertain": structures
        }))
        return yaml.safe_dump(document, allow_unicode=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if suffix == ".jsonl":
        header = draw(st.lists(st.fixed_dictionaries({"batch": structures}), max_size=1))
        lines = header + draw(st.lists(job_like | structures, max_size=5))
        return "".join(json.dumps(line) + "\n" for line in lines).encode()
    header = draw(st.lists(keys, min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(scalars.map(str), max_size=7), max_size=4))
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows([header, *rows])
    return buffer.getvalue().encode("utf-8", "surrogatepass")


# 1. Never a traceback -----------------------------------------------------------------------------


@bounded(150)
@given(suffix=st.sampled_from(FORMATS), data=st.binary(max_size=2048))
def test_random_bytes_are_refused_or_loaded_never_a_traceback(folder: Path, suffix: str, data: bytes):
    assert_refused_or_loaded(drop(folder, suffix, data))


@bounded(400)
@given(file=hostile_files())
@example(file=(".yaml", b"---\n"))
def test_hostile_text_structures_and_snippets_are_refused_or_loaded_never_a_traceback(
    folder: Path, file: tuple[str, bytes]
):
    suffix, data = file
    assert_refused_or_loaded(drop(folder, suffix, data))


@bounded(150)
@given(suffix=st.sampled_from((".yaml", ".jsonl")), document=structures)
def test_random_structures_as_yaml_and_json_lines_are_refused_or_loaded_never_a_traceback(
    folder: Path, suffix: str, document: Any
):
    text = yaml.safe_dump(document) if suffix == ".yaml" else json.dumps(document) + "\n"
    assert_refused_or_loaded(drop(folder, suffix, text))


@bounded(25)
@given(suffix=st.sampled_from(FORMATS), depth=st.integers(30, 20_000), lists=st.booleans())
def test_deeply_nested_structures_are_refused_not_a_recursion_error(folder: Path, suffix: str, depth: int, lists: bool):
    nested = "[" * depth + "]" * depth if lists else '{"a": ' * depth + "1" + "}" * depth
    text = {
        ".yaml": f"jobs:\n  - prompt: a\n    provider: gencraft\n    options: {{x: {nested}}}\n",
        ".jsonl": f'{{"prompt": "a", "provider": "gencraft", "options": {{"x": {nested}}}}}\n',
        ".csv": f'prompt,provider,options.x\na,gencraft,"{nested.replace(chr(34), chr(34) * 2)}"\n',
    }[suffix]
    assert_refused_or_loaded(drop(folder, suffix, text))


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_number_too_long_for_python_to_read_is_refused_or_kept_as_text(folder: Path, suffix: str):
    digits = "9" * 5000
    text = {
        ".yaml": f"priority: {digits}\njobs:\n  - {{prompt: a, provider: gencraft, seed: {digits}}}\n",
        ".jsonl": f'{{"prompt": "a", "provider": "gencraft", "seed": {digits}}}\n',
        ".csv": f"prompt,provider,options.x\na,gencraft,{digits}\n",
    }[suffix]
    assert_refused_or_loaded(drop(folder, suffix, text))


# Very long fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_100_kB_prompt_loads_whole_in_every_format(folder: Path, suffix: str):
    prompt = ("a knight in red armour, " * 5000)[:100_000].strip()
    path = drop(folder, suffix, as_file([{"prompt": prompt, "provider": "gencraft"}], suffix))
    spec = assert_refused_or_loaded(path)
    assert isinstance(spec, BatchSpec)
    assert [job.prompt for job in spec.jobs] == [prompt]


def test_a_10k_column_csv_header_is_refused_column_by_column_on_line_1(folder: Path):
    header = ",".join(["prompt", "provider", *(f"colour{n}" for n in range(10_000))])
    path = drop(folder, ".csv", f"{header}\na,gencraft\n")
    refusal = assert_refused_or_loaded(path)
    assert isinstance(refusal, BatchFileError)
    assert len(refusal.problems) == 10_000
    assert {(problem.line, problem.field) for problem in refusal.problems[:2]} == {(1, "colour0"), (1, "colour1")}


# 2. Problems name the file, the line and the field ------------------------------------------------


@st.composite
def one_bad_job(draw: st.DrawFn, fault: str) -> tuple[str, bytes]:
    """A good file with one job broken: its prompt blank or missing, or its provider unknown."""
    suffix = draw(st.sampled_from(FORMATS))
    rows = draw(jobs)
    bad = rows[draw(st.integers(0, len(rows) - 1))]
    if fault == "blank prompt":
        bad["prompt"] = draw(st.text(" \t\u00a0\u3000\u2007", max_size=3))
    elif fault == "missing prompt":
        del bad["prompt"]
    else:
        bad["provider"] = draw(prompts.filter(lambda text: text not in PROVIDERS))
    return suffix, draw(written(rows, suffix))


@bounded(150)
@given(file=one_bad_job("blank prompt") | one_bad_job("missing prompt"))
def test_a_blank_or_missing_prompt_is_refused_naming_the_prompt_field_on_a_line_of_the_file(
    folder: Path, file: tuple[str, bytes]
):
    path = drop(folder, *file)
    refusal = assert_refused_or_loaded(path)
    assert isinstance(refusal, BatchFileError)
    [problem] = refusal.problems
    assert problem.field == "prompt" and problem.line is not None


@bounded(150)
@given(file=one_bad_job("unknown provider"))
def test_an_unknown_provider_is_refused_naming_the_provider_field_and_the_known_ones(
    folder: Path, file: tuple[str, bytes]
):
    path = drop(folder, *file)
    refusal = assert_refused_or_loaded(path)
    assert isinstance(refusal, BatchFileError)
    [problem] = refusal.problems
    assert problem.field == "provider" and problem.line is not None
    assert all(provider in problem.message for provider in PROVIDERS)


# 3. A refused file writes no row ------------------------------------------------------------------


def rows_in(engine: Engine) -> tuple[int, int]:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Batch)).one(), session.exec(
            select(func.count()).select_from(Job)
        ).one()


LAUGHS = "jobs:\n  - prompt: a\n    provider: gencraft\n    options:\n      a: &a [x, x, x, x, x, x, x, x, x, x]\n"
LAUGHS += "".join(f"      {b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdef", "bcdefg", strict=True))
"""Aliases of aliases: a few hundred bytes that expand to ten million values when the job is written."""


@bounded(150)
@given(file=hostile_files() | good_files().map(lambda good: (good[0], good[2])))
@example(file=(".yaml", b"jobs: []\njobs:\n  - {prompt: a, provider: gencraft}\n"))
@example(file=(".yaml", b"priority: 99999999999999999999\njobs:\n  - {prompt: a, provider: gencraft}\n"))
@example(file=(".yaml", b"jobs:\n  - {prompt: a, provider: gencraft, options: {x: !!binary /w==}}\n"))
@example(file=(".yaml", b"jobs:\n  - &a {prompt: a, provider: gencraft, options: {x: *a}}\n"))
@example(file=(".jsonl", b'{"prompt": "a", "provider": "gencraft", "options": {"x": "\\ud800"}}\n'))
@example(file=(".jsonl", b'{"prompt": "a\\u0000", "provider": "gencraft"}\n'))
@example(file=(".yaml", b'name: "spring\\n"\njobs:\n  - {prompt: a, provider: gencraft}\n'))
@example(file=(".yaml", LAUGHS.encode()))
def test_a_refused_file_writes_no_row_and_a_loaded_one_writes_its_jobs(
    folder: Path, sqlite_engine: Engine, file: tuple[str, bytes]
):
    path = drop(folder, *file)
    batch_rows, job_rows = rows_in(sqlite_engine)

    outcome = assert_refused_or_loaded(path)
    if isinstance(outcome, BatchFileError):
        assert rows_in(sqlite_engine) == (batch_rows, job_rows)
        return
    produced = produce(sqlite_engine, outcome)  # what `genq submit` does next; a refusal never gets here

    added = (1, len(outcome.jobs)) if produced.created else (0, 0)
    assert rows_in(sqlite_engine) == (batch_rows + added[0], job_rows + added[1])


# 4. A good file round-trips -----------------------------------------------------------------------


@bounded(200)
@given(file=good_files())
def test_a_batch_written_by_a_tool_loads_back_as_the_same_jobs_in_order(
    folder: Path, file: tuple[str, list[dict[str, Any]], bytes]
):
    suffix, rows, data = file
    path = drop(folder, suffix, data)
    spec = assert_refused_or_loaded(path)

    assert isinstance(spec, BatchSpec), spec
    assert len(spec.jobs) == len(rows)
    assert [job.prompt for job in spec.jobs] == [row["prompt"] for row in rows]
    assert [job.provider for job in spec.jobs] == [row["provider"] for row in rows]
    assert [job.name for job in spec.jobs] == [row.get("name") for row in rows]
    assert all(earlier < later for earlier, later in zip(spec.lines, spec.lines[1:], strict=False))


# 5. Semicolons and tabs ---------------------------------------------------------------------------


@bounded(150)
@given(
    separator=st.sampled_from(((";", "semicolon"), ("\t", "tab"))),
    columns=st.lists(st.sampled_from(JOB_FIELDS), min_size=2, max_size=6, unique=True),
    newline=st.sampled_from(NEWLINES),
    bom=st.sampled_from(("", BOM)),
)
def test_a_semicolon_or_tab_separated_csv_is_refused_saying_so_at_line_1(
    folder: Path, separator: tuple[str, str], columns: list[str], newline: str, bom: str
):
    mark, word = separator
    row = mark.join("gencraft" if column == "provider" else "a boot" for column in columns)
    path = drop(folder, ".csv", f"{bom}{mark.join(columns)}{newline}{row}{newline}")

    refusal = assert_refused_or_loaded(path)

    assert isinstance(refusal, BatchFileError)
    assert [str(problem) for problem in refusal.problems] == [
        f"inbox/catalog.csv:1: the header looks {word}-separated; use commas"
    ]


def test_a_spreadsheet_saved_with_semicolons_is_refused_with_the_reason(folder: Path):
    path = drop(folder, ".csv", "prompt;provider\na red boot;gencraft\n")
    with pytest.raises(BatchFileError) as refused:
        load_batch(path, display_name="catalog.csv")
    assert str(refused.value) == "catalog.csv:1: the header looks semicolon-separated; use commas"


def test_a_single_column_csv_of_prompts_is_still_about_the_missing_provider_not_separators(folder: Path):
    refusal = assert_refused_or_loaded(drop(folder, ".csv", "prompt\na boot; red\n"))
    assert isinstance(refusal, BatchFileError)
    assert [(problem.line, problem.field) for problem in refusal.problems] == [(2, "provider")]
