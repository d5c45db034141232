"""The ``genq`` command: run a batch here, submit one to a deployment, watch the inbox, serve the
sandbox, and start the processes of a deployment."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from jobs.accounts import load_accounts
from jobs.batchfile import load_batch
from jobs.db import make_engine, migrate
from jobs.errors import BatchFileError, ConfigError, GenqError
from jobs.settings import Settings
from jobs.spec import BatchSpec
from jobs.states import BatchState, UncertainPolicy
from jobs.status import BatchStatus, batch_status, recent_batches

if TYPE_CHECKING:
    from workers.fleet import AccountReport
    from workers.plan import Plan

app = typer.Typer(help="genq: a durable batch queue for AI image generation.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
QUEUES = "control,submit,poll,collect"

FileArg = Annotated[Path, typer.Argument(help="A batch file: .csv, .yaml or .jsonl.", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Make a new batch even if this file was submitted.")]
OnUncertainOpt = Annotated[
    UncertainPolicy | None,
    typer.Option(
        "--on-uncertain",
        help="A job whose submit answer was lost and that the provider cannot account for: fail it (never pay "
        "twice; the default) or resubmit it (no picture missing). Overrides the file's on_uncertain.",
    ),
]


def _refuse(error: GenqError) -> typer.Exit:
    if isinstance(error, BatchFileError):
        errors.print(f"[red]refused:[/] {len(error.problems)} problem(s); nothing was submitted", highlight=False)
        for problem in error.problems:
            errors.print(f"  {problem}", highlight=False, markup=False)
    else:
        errors.print(f"[red]error:[/] {error}", highlight=False)
    return typer.Exit(EXIT_INVALID)


def _checked_batch(path: Path, settings: Settings, *, require_keys: bool = True) -> BatchSpec:
    """The batch, checked as a file and against the accounts that would serve it."""
    from workers.providers import batch_problems

    spec = load_batch(path, display_name=str(path))
    accounts = load_accounts(settings.accounts, require_keys=require_keys)
    problems = batch_problems(spec, accounts, trusted=settings.trusted())
    if problems:
        raise BatchFileError(problems)
    return spec


def _engine(settings: Settings) -> Engine:
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    return engine


def _print_summary(status: BatchStatus, settings: Settings) -> None:
    from jobs.storage import Storage, batch_folder

    table = Table(title=f"batch {status.id} · {status.name} · {status.state}", show_header=True)
    for column in ("jobs", "succeeded", "failed", "canceled", "images"):
        table.add_column(column, justify="right")
    counts = status.counts
    table.add_row(
        str(status.total), str(counts["succeeded"]), str(counts["failed"]), str(counts["canceled"]), str(status.images)
    )
    console.print(table)
    for failure in status.errors:
        console.print(f"  job {failure['job']} (line {failure['line']}): {failure['error']}", markup=False)
    _print_lost_answers(status)
    storage = Storage(settings.resolved_storage_url())
    console.print(f"Images: {storage.where(batch_folder(status.id, status.name))}", markup=False, soft_wrap=True)
    if status.manifest_key:
        console.print(f"Manifest: {storage.where(status.manifest_key)}", markup=False, soft_wrap=True)


@app.command()
def run(
    file: FileArg,
    sandbox: Annotated[bool, typer.Option("--sandbox", help="Serve the fake providers and use them.")] = False,
    force: ForceOpt = False,
    concurrency: Annotated[int, typer.Option(help="Worker threads.")] = 8,
    on_uncertain: OnUncertainOpt = None,
) -> None:
    """Run one batch to the end on this machine, starting whatever is missing; the same file again resumes."""
    from jobs.embedded import EmbeddedStack
    from jobs.producer import produce
    from jobs.progress import WorkerDied, follow
    from workers.app import make_app
    from workers.providers import capability_problems

    settings = Settings()
    try:
        problems = capability_problems(load_batch(file, display_name=str(file)))
        if problems:
            raise BatchFileError(problems)
    except GenqError as error:
        raise _refuse(error) from None
    stack = EmbeddedStack(settings, sandbox=sandbox, concurrency=concurrency)
    try:
        try:
            settings = stack.start_services()
            spec = _checked_batch(file, settings)
        except GenqError as error:
            raise _refuse(error) from None
        engine = _engine(settings)
        produced = produce(engine, spec, force=force, on_uncertain=on_uncertain and on_uncertain.value)
        batch_id = produced.batch.id
        assert batch_id is not None
        if produced.created:
            _print_plan(_plan(spec, settings))
        verb = "submitted" if produced.created else "resuming"
        console.print(f"{verb} batch {batch_id} ({spec.name}): {len(spec.jobs)} jobs", highlight=False)
        status = batch_status(engine, batch_id)
        if not status.final:
            os.environ.update(stack.env)
            stack.start_worker()
            sender = make_app(settings)
            if stack.fresh_broker and not produced.created:
                sender.send_task("genq.reconcile", kwargs={"stale_after": 0})
            sender.send_task("genq.dispatch")
            status = follow(engine, batch_id, console, alive=stack.worker_alive)
        _print_summary(status, settings)
    except WorkerDied as error:
        errors.print(f"[red]error:[/] {error}; see {settings.var_dir / 'logs' / 'worker.log'}")
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        errors.print("stopping; run the same command again to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        stack.stop()
    raise typer.Exit(EXIT_OK if status.state == BatchState.SUCCEEDED else EXIT_FAILED)


@app.command()
def plan(file: FileArg, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What a batch will spend before anything is sent: requests, credits, and time at its accounts' limits."""
    settings = Settings()
    try:
        spec = _checked_batch(file, settings, require_keys=False)
    except GenqError as error:
        raise _refuse(error) from None
    estimate = _plan(spec, settings)
    if as_json:
        sys.stdout.write(json.dumps(estimate.to_json(), indent=2) + "\n")
    else:
        _print_plan(estimate)


def _plan(spec: BatchSpec, settings: Settings) -> Plan:
    """The plan, with generation times learned by the fleet where the broker answers, else each
    provider's typical time."""
    import redis

    from jobs.redisserver import client_url
    from workers.plan import plan_batch
    from workers.providers import ADAPTERS
    from workers.timing import CompletionTimes

    client = redis.Redis.from_url(client_url(settings.resolved_redis_url()), socket_timeout=2)
    learned = CompletionTimes(client, default=settings.first_poll_delay)

    def generation_seconds(provider: str, model: str | None) -> float:
        try:
            seen = learned.learned(provider, model)
        except (redis.RedisError, OSError):
            seen = None
        return ADAPTERS[provider].typical_seconds if seen is None else seen

    try:
        accounts = load_accounts(settings.accounts, require_keys=False)
        return plan_batch(spec, accounts, generation_seconds, spread=settings.rate_spread)
    finally:
        client.close()


def _print_plan(estimate: Plan) -> None:
    for p in estimate.providers:
        console.print(
            f"  {p.provider}: {p.jobs} jobs, {p.pictures} pictures: {p.submits} submits + {p.polls} polls, "
            f"{p.credits} credits; {p.accounts} account(s) at {p.rpm} requests/min: about {_duration(p.seconds)}",
            highlight=False,
        )
    console.print(
        f"plan: {estimate.requests} provider requests, {estimate.credits} credits, about {_duration(estimate.seconds)}",
        highlight=False,
    )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "never (no account)"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


@app.command()
def submit(file: FileArg, force: ForceOpt = False, on_uncertain: OnUncertainOpt = None) -> None:
    """Submit a batch to a running deployment; prints the batch id."""
    from jobs.producer import produce

    settings = Settings()
    try:
        spec = _checked_batch(file, settings)
    except GenqError as error:
        raise _refuse(error) from None
    produced = produce(_engine(settings), spec, force=force, on_uncertain=on_uncertain and on_uncertain.value)
    _kick(settings)
    if not produced.created:
        errors.print(f"this file is already batch {produced.batch.id}; --force makes a new one")
    console.print(produced.batch.id)


@app.command()
def status(
    batch: Annotated[int | None, typer.Argument(help="A batch id; all recent batches if left out.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where batches stand: jobs per state, images stored, failures."""
    settings = Settings()
    engine = _engine(settings)
    try:
        found = [batch_status(engine, batch)] if batch is not None else recent_batches(engine)
    except GenqError as error:
        errors.print(f"[red]error:[/] {error}")
        raise typer.Exit(EXIT_INVALID) from None
    accounts = _account_reports(settings) if batch is None else []
    if as_json:
        payload = (
            found[0].to_json()
            if batch is not None
            else {"batches": [s.to_json() for s in found], "accounts": [a.to_json() for a in accounts]}
        )
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    table = Table(show_header=True, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("batch", justify="right", no_wrap=True)
    table.add_column("name", overflow="fold", min_width=8)
    table.add_column("state", no_wrap=True)
    for column in ("jobs", "pending", "running", "succeeded", "failed", "images"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for s in found:
        running = sum(s.counts[k] for k in ("queued", "submitting", "running", "collecting", "uncertain"))
        table.add_row(
            str(s.id), s.name, s.state, str(s.total), str(s.counts["pending"]), str(running),
            str(s.counts["succeeded"]), str(s.counts["failed"]), str(s.images),
        )  # fmt: skip
    console.print(table)
    for s in found:
        _print_lost_answers(s, prefix="" if batch is not None else f"batch {s.id}: ")
    if accounts:
        console.print(_accounts_table(accounts))


def _print_lost_answers(status: BatchStatus, prefix: str = "") -> None:
    lost = status.lost_answers
    if lost["uncertain"]:
        console.print(
            f"{prefix}lost answers: {lost['uncertain']} job(s) whose submit answer was lost; "
            f"{lost['adopted']} found at the provider and kept, {lost['resubmitted']} sent again "
            f"(on_uncertain: {status.on_uncertain})",
            highlight=False,
        )


def _account_reports(settings: Settings) -> list[AccountReport]:
    """Every account's standing; none when there is no accounts file to read."""
    from workers.fleet import account_reports
    from workers.runtime import Runtime

    try:
        accounts = load_accounts(settings.accounts, require_keys=False)
    except ConfigError:
        return []
    runtime = Runtime(settings)
    try:
        return account_reports(runtime, accounts)
    finally:
        runtime.close()


def _accounts_table(reports: list[AccountReport]) -> Table:
    table = Table(show_header=True, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("account", "provider", "last minute", "in flight", "credits", "paused"):
        table.add_column(column, overflow="fold")
    for report in reports:
        used = "?" if report.used_last_minute is None else str(report.used_last_minute)
        paused = ""
        if report.paused_for:
            paused = f"{report.paused_for:.0f} s more: {report.paused_because}"
        credits = "" if report.credits_remaining is None else f"{report.credits_remaining:g}"
        table.add_row(
            report.name, report.provider, f"{used}/{report.rpm}", f"{report.in_flight}/{report.max_in_flight}",
            credits, paused,
        )  # fmt: skip
    return table


@app.command("sandbox")
def serve_sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8700,
) -> None:
    """Serve the fake providers (all on one server, each under its own path)."""
    from sandbox.config import SandboxConfig
    from sandbox.server import serve

    console.print(f"sandbox on http://{host}:{port}/<provider>; stats at /_sandbox/stats")
    serve(host, port, SandboxConfig.from_env())


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Queues to serve, comma-separated.")] = QUEUES,
    concurrency: Annotated[int, typer.Option(help="Processes or threads.")] = 4,
    pool: Annotated[str, typer.Option(help="prefork or threads.")] = "prefork",
    beat: Annotated[bool, typer.Option("--beat", help="Also run the periodic schedule (one per deployment).")] = False,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker of this deployment."""
    command = ["celery", "-A", "workers", "worker", "--queues", queues, "--concurrency", str(concurrency)]
    command += ["--pool", pool, "--loglevel", loglevel] + (["--beat"] if beat else [])
    _exec_celery(command)


@app.command("beat")
def run_beat(loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO") -> None:
    """Run the periodic schedule: dispatch, poll sweeps and the reconciler. Exactly one per deployment."""
    schedule = Settings().var_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    _exec_celery(["celery", "-A", "workers", "beat", "--loglevel", loglevel, "--schedule", str(schedule)])


@app.command()
def watch() -> None:
    """Submit every batch file that lands in the inbox, then move it to done/ or failed/."""
    from jobs.inbox import watch as watch_inbox

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    migrate(make_engine(settings.resolved_database_url()))
    console.print(f"watching {settings.batches_dir / 'inbox'}")
    with contextlib.suppress(KeyboardInterrupt):
        watch_inbox(settings, on_batch=lambda _batch_id: _kick(settings))


@app.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date (every genq process also does this at start)."""
    settings = Settings()
    migrate(make_engine(settings.resolved_database_url()))
    console.print("database is up to date")


def _exec_celery(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", *argv])


def _kick(settings: Settings) -> None:
    """Wake the dispatcher now rather than at its next tick; harmless when no broker answers."""
    import redis

    from jobs.redisserver import client_url
    from workers.app import make_app

    try:
        redis.Redis.from_url(client_url(settings.resolved_redis_url()), socket_timeout=1).ping()
        make_app(settings).send_task("genq.dispatch")
    except (redis.RedisError, OSError):
        pass


def main() -> None:
    try:
        app()
    except ConfigError as error:
        errors.print(f"[red]error:[/] {error}", highlight=False)
        sys.exit(EXIT_INVALID)
if __name__ == "__main__":
    main()
