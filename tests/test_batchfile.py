"""Batch files: every format gives the same jobs, and every problem is named by file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from jobs.batchfile import load_batch, open_batch, parse_batch
from jobs.db import make_engine, migrate
from jobs.errors import BatchFileError, Problem
from jobs.models import Batch, Job
from jobs.producer import produce
from jobs.spec import BatchSpec, JobSpec

EXAMPLES = Path(__file__).resolve().parent.parent / "batches" / "examples"


def problems_of(data: str | bytes, source: str) -> list[Problem]:
    with pytest.raises(BatchFileError) as refused:
        parse_batch(data.encode() if isinstance(data, str) else data, source)
    return refused.value.problems


def where(problems: list[Problem]) -> list[tuple[int | None, str | None]]:
    return [(problem.line, problem.field) for problem in problems]


def test_the_same_jobs_in_each_format_become_the_same_specs():
    csv = "prompt,provider,name,aspect,count\na red boot,gencraft,sku-1042/front,3:4,2\n"
    yaml = (
        "jobs:\n  - prompt: a red boot\n    provider: gencraft\n"
        "    name: sku-1042/front\n    aspect: 3:4\n    count: 2\n"
    )
    jsonl = '{"prompt": "a red boot", "provider": "gencraft", "name": "sku-1042/front", "aspect": "3:4", "count": 2}\n'
    expected = JobSpec(prompt="a red boot", provider="gencraft", name="sku-1042/front", aspect="3:4", count=2)

    for data, source in ((csv, "b.csv"), (yaml, "b.yaml"), (jsonl, "b.jsonl")):
        assert parse_batch(data.encode(), source).jobs == (expected,), source


def test_a_yaml_aspect_stays_text_rather_than_a_base_60_number():
    spec = parse_batch(b"jobs:\n  - {prompt: a, provider: gencraft, aspect: 16:9}\n", "b.yaml")
    assert spec.jobs[0].aspect == "16:9"


def test_yaml_defaults_apply_to_every_job_and_a_job_overrides_them():
    spec = parse_batch(
        b"""\
name: knights
priority: 5
defaults:
  provider: gencraft
  aspect: "1:1"
  options: {imageSize: 1K, quality: high}
jobs:
  - prompt: idle knight
  - prompt: portrait
    aspect: "3:4"
    options: {quality: low}
""",
        "sprites.yaml",
    )
    assert (spec.name, spec.priority, spec.lines) == ("knights", 5, (8, 9))
    idle, portrait = spec.jobs
    assert (idle.provider, idle.aspect, idle.options) == ("gencraft", "1:1", {"imageSize": "1K", "quality": "high"})
    assert (portrait.aspect, portrait.options) == ("3:4", {"imageSize": "1K", "quality": "low"})


def test_csv_lines_are_physical_lines_even_after_a_quoted_cell_spanning_several():
    spec = parse_batch(b'prompt,provider\n"a prompt\nover three\nlines",gencraft\n\nplain,gencraft\n', "catalog.csv")
    assert spec.lines == (2, 6)
    assert spec.jobs[0].prompt == "a prompt\nover three\nlines"


def test_csv_cells_empty_means_unset_references_split_on_bars_and_option_columns_nest():
    spec = parse_batch(
        b"prompt,provider,seed,references,options.quality,options.hd\n"
        b"a boot,gencraft,,https://x.test/a.png | https://x.test/b.png,high,true\n",
        "c.csv",
    )
    [job] = spec.jobs
    assert job.seed is None
    assert job.references == ("https://x.test/a.png", "https://x.test/b.png")
    assert job.options == {"quality": "high", "hd": True}


def test_a_jsonl_header_line_names_the_batch_and_sets_defaults():
    spec = parse_batch(
        b'{"batch": {"name": "mixed", "priority": 2, "defaults": {"provider": "gencraft"}}}\n'
        b'{"prompt": "a"}\n\n{"prompt": "b", "aspect": "2:3"}\n',
        "m.jsonl",
    )
    assert (spec.name, spec.priority, spec.lines) == ("mixed", 2, (2, 4))
    assert [job.provider for job in spec.jobs] == ["gencraft", "gencraft"]


def test_a_csv_with_an_empty_prompt_on_line_7_is_refused_naming_that_line_and_field():
    rows = "".join(f"item {n},gencraft\n" for n in range(2, 7))
    problems = problems_of(f"prompt,provider\n{rows},gencraft\n", "catalog.csv")
    assert where(problems) == [(7, "prompt")]
    assert str(problems[0]).startswith("catalog.csv:7: prompt: ")


def test_a_yaml_syntax_error_names_the_line():
    problems = problems_of("jobs:\n  - prompt: a cat\n    provider: gencraft\n  - prompt: [unclosed\n", "b.yaml")
    assert where(problems) == [(4, None)]
    assert "not valid YAML" in problems[0].message


def test_a_jsonl_line_naming_an_unknown_provider_is_refused_with_the_known_ones():
    problems = problems_of('{"prompt": "a", "provider": "gencraft"}\n{"prompt": "b", "provider": "dalle"}\n', "m.jsonl")
    assert where(problems) == [(2, "provider")]
    assert "'dalle'" in problems[0].message and "gencraft" in problems[0].message


def test_every_bad_row_is_reported_not_just_the_first():
    problems = problems_of(
        '{"prompt": "a", "provider": "dalle"}\n{not json\n{"prompt": "", "provider": "gencraft"}\n'
        '{"prompt": "c", "provider": "gencraft", "colour": "red"}\n'
        '{"prompt": "d", "provider": "gencraft", "count": 0}\n',
        "m.jsonl",
    )
    assert where(problems) == [(1, "provider"), (2, None), (3, "prompt"), (4, "colour"), (5, "count")]


def test_a_yaml_problem_points_at_the_line_of_the_field_itself():
    problems = problems_of(
        "defaults:\n  provider: gencraft\njobs:\n  - prompt: a\n    count: many\n  - prompt: b\n    colour: red\n",
        "b.yaml",
    )
    assert where(problems) == [(5, "count"), (7, "colour")]


def test_unknown_columns_and_a_missing_prompt_column_are_refused_at_the_header():
    problems = problems_of("title,provider,colour\nx,gencraft,red\n", "c.csv")
    assert sorted(where(problems), key=str) == [(1, "colour"), (1, "prompt"), (1, "title")]


def test_a_row_with_more_cells_than_the_header_is_refused():
    assert where(problems_of("prompt,provider\na,gencraft,extra\n", "c.csv")) == [(2, None)]


def test_two_jobs_with_one_name_would_overwrite_each_other_so_the_second_is_refused():
    problems = problems_of("prompt,provider,name\na,gencraft,sku-1\nb,gencraft,sku-1\n", "c.csv")
    assert where(problems) == [(3, "name")]
    assert "line 2" in problems[0].message


def test_a_name_given_three_times_is_refused_at_each_later_line_naming_the_first():
    rows = "".join(f"{prompt},gencraft,{name}\n" for prompt, name in [("a", "x"), ("b", "y"), ("c", "x"), ("d", "x")])
    problems = problems_of("prompt,provider,name\n" + rows, "c.csv")
    assert [(problem.line, problem.message) for problem in problems] == [
        (4, "'x' is already the name of line 2"),
        (5, "'x' is already the name of line 2"),
    ]


def test_thousands_of_distinct_names_are_not_taken_for_duplicates():
    """Names are kept as 64-bit hashes behind a bitmap of their low bits, which fills and grows; a
    name whose bits are marked already is only a suspect, and distinct names are never refused."""
    rows = "".join(f"p,gencraft,n{number}\n" for number in range(20_000))
    assert len(parse_batch(f"prompt,provider,name\n{rows}".encode(), "c.csv").jobs) == 20_000


@pytest.mark.parametrize("name", ["../escape", "/abs", "a//b", "sku 1", "a/../b"])
def test_a_name_that_is_not_a_safe_storage_key_is_refused(name: str):
    assert where(problems_of(f'{{"prompt": "a", "provider": "gencraft", "name": "{name}"}}\n', "m.jsonl")) == [
        (1, "name")
    ]


def test_a_bad_batch_header_is_refused():
    header = "name: a b/c\npriority: high\ncolour: red\n"
    problems = problems_of(header + "jobs:\n  - {prompt: a, provider: gencraft}\n", "b.yaml")
    assert sorted(where(problems), key=str) == [(1, "name"), (2, "priority"), (3, "colour")]


@pytest.mark.parametrize(
    ("data", "source", "message"),
    [
        (b"", "empty.csv", "empty"),
        (b"prompt,provider\n", "header-only.csv", "no jobs"),
        (b"prompt\n\xff\xfe\n", "latin.csv", "not UTF-8"),
        (b"prompt\nx\n", "notes.txt", "unsupported file type"),
        (b"just a string\n", "b.yaml", "expected a mapping"),
    ],
)
def test_files_that_are_not_batches_are_refused_with_a_reason(data: bytes, source: str, message: str):
    [problem] = problems_of(data, source)
    assert message in problem.message
    assert problem.file == source


def test_the_same_bytes_are_the_same_batch_and_other_bytes_are_not():
    first = parse_batch(b"prompt,provider\na,gencraft\n", "x.csv")
    again = parse_batch(b"prompt,provider\na,gencraft\n", "elsewhere.csv")
    other = parse_batch(b"prompt,provider\nb,gencraft\n", "x.csv")
    assert first.content_hash == again.content_hash != other.content_hash


def test_a_byte_order_mark_from_a_spreadsheet_is_not_part_of_the_first_column():
    assert parse_batch(b"\xef\xbb\xbfprompt,provider\na,gencraft\n", "excel.csv").jobs[0].prompt == "a"


def test_load_batch_names_the_file_as_given_and_takes_the_batch_name_from_it(tmp_path: Path):
    path = tmp_path / "spring sale.csv"
    path.write_text("prompt,provider\n,gencraft\n")
    with pytest.raises(BatchFileError) as refused:
        load_batch(path, display_name="in/spring sale.csv")
    assert str(refused.value) == "in/spring sale.csv:2: prompt: is required"

    path.write_text("prompt,provider\na,gencraft\n")
    assert load_batch(path).name == "spring-sale"
    with pytest.raises(BatchFileError, match="no such file"):
        load_batch(tmp_path / "missing.csv")


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir()))
def test_every_example_batch_loads(example: str):
    spec = load_batch(EXAMPLES / example)
    assert spec.jobs
    assert len({job.name for job in spec.jobs}) == len(spec.jobs)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir()))
def test_a_streamed_batch_reads_the_same_jobs_as_a_held_one(example: str):
    held = load_batch(EXAMPLES / example)
    streamed = open_batch(EXAMPLES / example)
    assert (streamed.name, streamed.content_hash, streamed.job_count, streamed.budget, streamed.sheets) == (
        held.name, held.content_hash, held.job_count, held.budget, held.sheets
    )  # fmt: skip
    assert list(streamed.rows()) == list(held.rows())


def test_open_batch_refuses_a_bad_file_as_load_batch_does(tmp_path: Path):
    path = tmp_path / "c.csv"
    path.write_text("prompt,provider,name\na,gencraft,x\n,gencraft,y\nb,dalle,z\nc,gencraft,x\n")
    with pytest.raises(BatchFileError) as held:
        load_batch(path)
    with pytest.raises(BatchFileError) as streamed:
        open_batch(path)
    assert streamed.value.problems == held.value.problems
    assert where(streamed.value.problems) == [(3, "prompt"), (4, "provider"), (5, "name")]


def test_the_row_checks_see_every_row_and_speak_only_when_the_file_itself_is_sound(tmp_path: Path):
    path = tmp_path / "c.csv"
    path.write_text("prompt,provider\n" + "a,gencraft\n" * 2_500)
    seen: list[int] = []

    def check(rows: BatchSpec) -> list[Problem]:
        seen.extend(rows.lines)
        return [Problem(rows.source, line, "provider", "no account") for line in rows.lines if line == 2_501]

    with pytest.raises(BatchFileError) as refused:
        open_batch(path, check=check)
    assert seen == list(range(2, 2_502))
    assert where(refused.value.problems) == [(2_501, "provider")]

    path.write_text("prompt,provider\n" + "a,gencraft\n" * 2_499 + ",gencraft\n")
    with pytest.raises(BatchFileError) as refused:
        open_batch(path, check=check)
    assert where(refused.value.problems) == [(2_501, "prompt")]


def test_a_file_changed_between_its_check_and_its_writing_is_refused_and_writes_nothing(tmp_path: Path):
    path = tmp_path / "c.csv"
    path.write_text("prompt,provider\na,gencraft\nb,gencraft\n")
    batch = open_batch(path)
    path.write_text("prompt,provider\na,gencraft\nb,dalle\n")
    engine = make_engine(f"sqlite:///{tmp_path / 'genq.db'}")
    migrate(engine)

    with pytest.raises(BatchFileError, match="changed while it was being submitted"):
        produce(engine, batch)

    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Batch)).one() == 0
        assert session.exec(select(func.count()).select_from(Job)).one() == 0
