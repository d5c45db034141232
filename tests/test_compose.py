"""The production stack as written: compose.yaml is a valid Compose file, every command it runs
parses, and the example accounts and environment files match what it and genq expect."""

from __future__ import annotations

import json
import re
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from jsonschema import Draft202012Validator

from jobs.accounts import load_accounts
from jobs.cli import app as cli_app
from jobs.spec import PROVIDERS

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
ACCOUNTS = ROOT / "accounts.example.yaml"
ENV_EXAMPLE = ROOT / ".env.example"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt} or $NAME; $$ escapes.
_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<modifier>:?[-?+])?[^}]*\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def genq_services() -> dict[str, dict[str, Any]]:
    """The services that run the genq image."""
    return {name: service for name, service in services().items() if "build" in service}


def environment(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("environment") or {}
    if isinstance(value, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in value)
    return {key: "" if item is None else str(item) for key, item in value.items()}


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command", [])
    assert isinstance(value, list), f"command should be a list (exec form), got {value!r}"
    return [str(part) for part in value]


def env_example() -> dict[str, str]:
    names: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            names[name.strip()] = value.strip()
    return names


def parse(subcommand: Any, args: list[str]) -> tuple[dict[str, Any], str | None]:
    """The parameters ``args`` give a genq subcommand, or why it refuses them."""
    try:
        with subcommand.make_context(subcommand.name, args, resilient_parsing=False) as context:
            return dict(context.params), None
    except Exception as error:  # typer's own click raises its UsageError or BadParameter here
        return {}, error.format_message() if hasattr(error, "format_message") else repr(error)


def test_compose_file_follows_the_compose_specification():
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text("utf-8"))
    validator = Draft202012Validator(schema)
    problems = sorted(validator.iter_errors(compose()), key=lambda error: list(error.absolute_path))
    report = "\n".join(
        f"  {'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}" for error in problems
    )
    assert not problems, f"compose.yaml does not follow the Compose specification:\n{report}"


def test_every_genq_command_names_a_real_subcommand_and_its_options_parse():
    group = typer.main.get_command(cli_app)
    assert hasattr(group, "commands"), "genq should be a group of subcommands"
    _, refused = parse(group.commands["worker"], ["--no-such-option"])
    assert refused and "--no-such-option" in refused, "parsing here should be strict"
    checked = 0
    for name, service in services().items():
        argv = command(service)
        if argv[:1] != ["genq"]:
            continue
        subcommand = group.commands.get(argv[1])
        assert subcommand is not None, f"{name}: genq has no subcommand {argv[1]!r}; it has {sorted(group.commands)}"
        parsed, refused = parse(subcommand, argv[2:])
        assert refused is None, f"{name}: `{' '.join(argv)}` does not parse: {refused}"
        if argv[1] == "worker":
            assert parsed["pool"] in {"prefork", "threads"}, f"{name}: unknown pool {parsed['pool']!r}"
            assert parsed["concurrency"] > 0
            assert not parsed["beat"], f"{name}: a worker must not run the schedule; the beat service does"
        checked += 1
    assert checked >= 6


def test_the_workers_serve_every_queue_the_app_routes_to():
    from workers.app import QUEUES

    served: set[str] = set()
    for service in genq_services().values():
        argv = command(service)
        if argv[:2] == ["genq", "worker"]:
            served.update(argv[argv.index("--queues") + 1].split(","))
    assert served == set(QUEUES)


def test_flower_runs_as_a_celery_subcommand_of_the_workers_app():
    from celery import Celery

    argv = command(services()["flower"])
    assert argv[:4] == ["celery", "-A", "workers", "flower"]
    import workers

    assert isinstance(workers.app, Celery)
    assert "flower" in {entry.name for entry in entry_points(group="celery.commands")}


def test_flower_is_behind_basic_auth():
    from flower.options import options

    flower = services()["flower"]
    env = environment(flower)
    assert env.get("FLOWER_BASIC_AUTH", "").strip() or any(
        part.startswith("--basic_auth=") for part in command(flower)
    ), "flower must not run without basic auth"
    assert "FLOWER_UNAUTHENTICATED_API" not in env
    for name in env:
        if name.startswith("FLOWER_"):
            # as flower's own apply_env_options looks them up; tornado keeps option names with dashes
            option = name.removeprefix("FLOWER_").lower()
            assert {option, option.replace("_", "-")} & set(options._options), f"{name} names no flower option"


def test_every_genq_service_is_configured_for_the_stack():
    found = genq_services()
    assert {"migrate", "beat", "flower", "watcher"} <= set(found)
    for name, service in found.items():
        env = environment(service)
        assert env.get("GENQ_DATABASE_URL", "").startswith("postgresql://"), name
        assert "@postgres:5432/" in env["GENQ_DATABASE_URL"], name
        assert env.get("GENQ_REDIS_URL", "").startswith("redis://redis:6379"), name
        assert env.get("GENQ_STORAGE_URL", "").startswith("s3://"), name
        assert env.get("AWS_ENDPOINT_URL", "").startswith("http://minio:"), name
        assert env.get("AWS_ALLOW_HTTP") == "true", name
        assert env.get("GENQ_ACCOUNTS") == "/config/accounts.yaml", name
        assert any(str(volume).startswith("./accounts.yaml:/config/accounts.yaml") for volume in service["volumes"])
        assert service.get("env_file"), f"{name}: provider keys come from .env"
        depends = service["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        if name != "migrate":
            assert depends["redis"]["condition"] == "service_healthy", name
            assert depends["migrate"]["condition"] == "service_completed_successfully", name
            assert service.get("restart") == "unless-stopped", name


def test_exactly_one_beat():
    runs_schedule = [
        name
        for name, service in services().items()
        if command(service)[:2] == ["genq", "beat"] or "--beat" in command(service)
    ]
    assert runs_schedule == ["beat"]
    assert services()["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_redis_keeps_an_append_only_file():
    argv = command(services()["redis"])
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert any(str(volume).endswith(":/data") for volume in services()["redis"]["volumes"])


def test_the_example_accounts_load_and_cover_every_provider(monkeypatch: pytest.MonkeyPatch):
    document = yaml.safe_load(ACCOUNTS.read_text(encoding="utf-8"))
    for entry in document["accounts"]:
        monkeypatch.setenv(entry["api_key_env"], "placeholder")
    accounts = load_accounts(ACCOUNTS)
    assert {account.provider for account in accounts.values()} == set(PROVIDERS)
    assert all(account.rpm == 10 for account in accounts.values() if account.provider == "girlgenerator")


def test_env_example_names_every_key_and_every_required_variable():
    declared = env_example()
    accounts = yaml.safe_load(ACCOUNTS.read_text(encoding="utf-8"))["accounts"]
    for entry in accounts:
        assert entry["api_key_env"] in declared, f"{entry['api_key_env']} is missing from .env.example"
        assert not declared[entry["api_key_env"]], f"{entry['api_key_env']} should be left empty in .env.example"

    required = set()
    for match in _INTERPOLATION.finditer(COMPOSE.read_text(encoding="utf-8")):
        if match.group("bare"):
            required.add(match.group("bare"))
        elif match.group("braced") and (match.group("modifier") or "").lstrip(":") not in {"-", "+"}:
            required.add(match.group("braced"))
    assert required, "compose.yaml should take its secrets from the environment"
    missing = sorted(required - set(declared))
    assert not missing, f"compose.yaml needs {missing}, which .env.example does not name"
