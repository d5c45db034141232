"""The ``genq`` command: run a batch here, submit one to a deployment, watch the inbox, serve the
sandbox, and start the processes of a deployment."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine
from sqlmodel import Session

from jobs import deployment, render
from jobs.accounts import Account, load_accounts
from jobs.batchfile import load_batch
from jobs.checks import batch_problems, capability_problems
from jobs.db import make_engine, migrate
from jobs.errors import BatchFileError, BatchPaused, ConfigError, DatabaseError, GenqError, RedisUnavailable
from jobs.settings import Settings
from jobs.spec import BatchSpec
from jobs.states import BatchState, JobState, UncertainPolicy
from jobs.status import BatchStatus, batch_status, recent_batches

if TYPE_CHECKING:
    from sandbox.config import SandboxConfig
    from workers.fleet import AccountReport
    from workers.plan import Plan

app = typer.Typer(help="genq: a durable batch queue for AI image generation.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_PAUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_SIGNALED = {"SIGTERM": 143, "SIGHUP": 129}
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

BudgetOpt = Annotated[
    int | None,
    typer.Option(
        "--budget",
        min=1,
        help="Credits the batch may spend at most; it pauses there. Overrides the file's budget.",
        show_default=False,
    ),
]


def _refuse(error: GenqError) -> typer.Exit:
    if isinstance(error, BatchFileError):
        errors.print(f"[red]refused:[/] {len(error.problems)} problem(s); nothing was submitted", highlight=False)
        for problem in error.problems:
            errors.print(f"  {problem}", highlight=False, markup=False)
    else:
        errors.print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_INVALID)


def _checked_batch(path: Path, settings: Settings, *, require_keys: bool = True) -> BatchSpec:
    """The batch, checked as a file and against the accounts that would serve it."""

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

    storage = Storage(settings.resolved_storage_url())
    folder = batch_folder(status.id, status.name)
    results = storage.where(status.manifest_key) if status.manifest_key else None
    render.print_summary(console, status, images=storage.where(folder), results=results)
    for label, key in (("Sheets", f"{folder}/sheets/index.json"), ("Report", f"{folder}/report.html")):
        try:
            storage.get(key)
        except GenqError:
            continue
        console.print(f"{label}: {storage.where(key.removesuffix('/index.json'))}", markup=False, soft_wrap=True)


SandboxOpt = Annotated[bool, typer.Option("--sandbox", help="Serve the fake providers and use them.")]


@app.command()
def run(
    file: FileArg,
    sandbox: SandboxOpt = False,
    force: ForceOpt = False,
    concurrency: Annotated[int, typer.Option(help="Worker threads.")] = 8,
    on_uncertain: OnUncertainOpt = None,
    budget: BudgetOpt = None,
) -> None:
    """Run one batch to the end on this machine, starting whatever is missing; the same file again resumes.

    With `genq up` running, the batch goes to that deployment. Otherwise this command starts what it
    needs (Redis, a worker, the sandbox), works on this batch alone, and stops what it started when the
    batch ends or on Ctrl-C, SIGTERM or SIGHUP; running it again resumes. Ctrl-C cancels nothing
    (`genq cancel` does). When the batch is paused (by hand or at its budget) it ends with exit code 3.
    """

    try:
        problems = capability_problems(load_batch(file, display_name=str(file)))
        if problems:
            raise BatchFileError(problems)
    except GenqError as error:
        raise _refuse(error) from None

    def prepare(settings: Settings, engine: Engine) -> Prepared:
        try:
            spec = _checked_batch(file, settings)
        except GenqError as error:
            raise _refuse(error) from None
        return _produce(engine, spec, settings, sandbox=sandbox, force=force, on_uncertain=on_uncertain, budget=budget)

    _drive(prepare, sandbox=sandbox, concurrency=concurrency, again="run the same command again to resume")


@dataclass(frozen=True)
class Prepared:
    """What a foreground command set going: its batch, whether work of it may be in flight from an
    earlier run (so a fresh broker must look for it), and the plan's time for it."""

    batch_id: int
    resumed: bool
    planned_seconds: float | None


def _drive(prepare: Callable[[Settings, Engine], Prepared], *, sandbox: bool, concurrency: int, again: str) -> None:
    """Run a batch to its end in the foreground: in the deployment of `genq up` when it is up, else
    on what this command starts; stopped by Ctrl-C, SIGTERM or SIGHUP."""
    started: list[int] = []

    def remembered(settings: Settings, engine: Engine) -> Prepared:
        prepared = prepare(settings, engine)
        started.append(prepared.batch_id)
        return prepared

    with deployment.stop_signals():
        try:
            up = deployment.running(Settings())
            if up is not None:
                _drive_in_deployment(up, remembered, sandbox=sandbox)
            else:
                _drive_here(remembered, sandbox=sandbox, concurrency=concurrency)
        except deployment.Stopped as stopped:
            errors.print(f"stopped by {stopped}; {again} {_not_canceled(started)}", highlight=False)
            raise typer.Exit(EXIT_SIGNALED.get(str(stopped), EXIT_INTERRUPTED)) from None
        except KeyboardInterrupt:
            errors.print(f"stopped; {again} {_not_canceled(started)}", highlight=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BatchPaused as paused:
            status = batch_status(_engine(deployment.settings_with(deployment.running(Settings()))), paused.batch_id)
            render.print_paused(errors, status, prefix=f"batch {status.id} ")
            errors.print(f"then {again}", highlight=False)
            raise typer.Exit(EXIT_PAUSED) from None


def _not_canceled(started: list[int]) -> str:
    """A stop of the local processes is not a cancel; says so, and what cancels."""
    batch = started[-1] if started else "N"
    return f"(nothing was canceled; `genq cancel {batch}` cancels)"


IN_FLIGHT_STATES = (JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING, JobState.COLLECTING)


def _until_paused(engine: Engine, batch_id: int, alive: Callable[[], bool]) -> Callable[[], bool]:
    """``alive`` for ``follow`` that also ends the follow once the batch is paused and what was in
    flight has been collected (it is paid for, so it is waited for)."""

    def check() -> bool:
        status = batch_status(engine, batch_id)
        if status.paused and not any(status.counts[state.value] for state in IN_FLIGHT_STATES):
            raise BatchPaused(batch_id, status.paused_reason or "")
        return alive()

    return check


def _drive_here(prepare: Callable[[Settings, Engine], Prepared], *, sandbox: bool, concurrency: int) -> None:
    from jobs.embedded import EmbeddedStack
    from jobs.progress import WorkerDied, follow
    from workers.app import make_app

    settings = Settings()
    stack = EmbeddedStack(settings, sandbox=sandbox, concurrency=concurrency)
    try:
        try:
            settings = stack.start_services()
        except GenqError as error:
            raise _refuse(error) from None
        engine = _engine(settings)
        prepared = prepare(settings, engine)
        status = batch_status(engine, prepared.batch_id)
        if not status.final:
            os.environ.update(stack.env)
            stack.start_worker(only_batch=prepared.batch_id)
            sender = make_app(settings)
            if stack.fresh_broker and prepared.resumed:
                sender.send_task("genq.reconcile", kwargs={"stale_after": 0})
            sender.send_task("genq.dispatch")
            alive = _until_paused(engine, prepared.batch_id, stack.worker_alive)
            status = follow(engine, prepared.batch_id, console, alive=alive, planned_seconds=prepared.planned_seconds)
        _print_summary(status, settings)
    except WorkerDied as error:
        errors.print(f"[red]error:[/] {error}; see {settings.var_dir / 'logs' / 'worker.log'}")
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        stack.stop()
    raise typer.Exit(EXIT_OK if status.state == BatchState.SUCCEEDED else EXIT_FAILED)


def _drive_in_deployment(
    up: deployment.Deployment, prepare: Callable[[Settings, Engine], Prepared], *, sandbox: bool
) -> None:
    from jobs.progress import follow

    if sandbox and not up.sandbox:
        raise _refuse(
            ConfigError("genq is up here without the sandbox: `genq down`, then `genq up --sandbox`, or drop --sandbox")
        )
    settings = deployment.settings_with(up)
    console.print(f"using the deployment of `genq up` ({up.describe()})", highlight=False)
    engine = _engine(settings)
    prepared = prepare(settings, engine)
    _kick(settings)
    batch_id = prepared.batch_id
    try:
        alive = _until_paused(engine, batch_id, up.alive)
        status = follow(engine, batch_id, console, alive=alive, planned_seconds=prepared.planned_seconds)
    except KeyboardInterrupt:
        errors.print(
            f"stopped watching; batch {batch_id} goes on in the deployment (`genq status {batch_id}`); "
            f"`genq pause {batch_id}` or `genq cancel {batch_id}` stops it",
            highlight=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    _print_summary(status, settings)
    raise typer.Exit(EXIT_OK if status.state == BatchState.SUCCEEDED else EXIT_FAILED)


def _produce(
    engine: Engine,
    spec: BatchSpec,
    settings: Settings,
    *,
    sandbox: bool,
    force: bool,
    on_uncertain: UncertainPolicy | None,
    budget: int | None = None,
) -> Prepared:
    """The batch's rows written (or found, for a file seen before), its plan printed when it is new.
    A ``budget`` given for a batch already there raises (or lowers) its cap from now on."""
    from jobs.embedded import sandbox_config
    from jobs.producer import produce

    produced = produce(engine, spec, force=force, on_uncertain=on_uncertain and on_uncertain.value, budget=budget)
    batch_id = produced.batch.id
    assert batch_id is not None
    estimate = _plan(spec, settings, sandbox_config() if sandbox else None)
    if produced.created:
        render.print_plan(console, replace(estimate, budget=produced.batch.budget))
    verb = "submitted" if produced.created else "resuming"
    console.print(f"{verb} batch {batch_id} ({spec.name}): {len(spec.jobs)} jobs", highlight=False)
    return Prepared(batch_id, resumed=not produced.created, planned_seconds=estimate.seconds)


BatchArg = Annotated[int, typer.Argument(help="A batch id (see `genq status`).", show_default=False)]


@app.command()
def retry(
    batch: BatchArg,
    failed: Annotated[bool, typer.Option("--failed/--no-failed", help="Send the rows that failed again.")] = True,
    uncertain: Annotated[
        bool, typer.Option("--uncertain", help="Send the rows whose submit answer was lost again.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what the retry would send and cost.")] = False,
    sandbox: SandboxOpt = False,
    concurrency: Annotated[int, typer.Option(help="Worker threads.")] = 8,
) -> None:
    """Send a finished batch's failed rows again, in the same batch under the same names; the rows
    that succeeded, and their pictures, are left as they are."""
    from jobs.embedded import sandbox_config
    from jobs.models import Batch as BatchRow
    from jobs.retry import retry_rows, retry_spec, rows_to_retry

    def planned(settings: Settings, engine: Engine) -> tuple[list[int], Plan]:
        """The rows to send again and what they will cost; refused when there is none."""
        try:
            rows = rows_to_retry(engine, batch, failed=failed, uncertain=uncertain)
            with Session(engine) as session:
                found = session.get(BatchRow, batch)
            if found is None or not rows:
                raise ConfigError(f"batch {batch} has no row to send again")
            estimate = _plan(retry_spec(found, rows), settings, sandbox_config() if sandbox else None)
        except GenqError as error:
            raise _refuse(error) from None
        render.print_plan(console, estimate)
        return [row.id for row in rows if row.id is not None], estimate

    def prepare(settings: Settings, engine: Engine) -> Prepared:
        rows, estimate = planned(settings, engine)
        moved = retry_rows(engine, batch, rows)
        console.print(f"retrying batch {batch}: {moved} rows sent again", highlight=False)
        return Prepared(batch, resumed=False, planned_seconds=estimate.seconds)

    if dry_run:
        settings = deployment.settings_with(deployment.running(Settings()))
        rows, _ = planned(settings, _engine(settings))
        console.print(f"{len(rows)} rows would be sent again; nothing was sent", highlight=False)
        return
    _drive(prepare, sandbox=sandbox, concurrency=concurrency, again=f"`genq run` or `genq up` resumes batch {batch}")


@app.command()
def report(batch: BatchArg) -> None:
    """Write a batch's report.html again (its thumbnails are made only where missing)."""
    from jobs.models import Batch as BatchRow
    from jobs.report import write_report
    from jobs.results import row_results
    from workers.finish import credits_spent, run_figures
    from workers.runtime import Runtime

    settings = deployment.settings_with(deployment.running(Settings()))
    runtime = Runtime(settings)
    engine = _engine(settings)
    try:
        with Session(engine) as session:
            found = session.get(BatchRow, batch)
        try:  # the plan needs the accounts; without an accounts file the report says it was not recorded
            figures = run_figures(runtime, found, row_results(engine, batch, credits=credits_spent)) if found else None
        except ConfigError:
            figures = None
        key = write_report(engine, runtime.storage, batch, figures)
    except GenqError as error:
        raise _refuse(error) from None
    finally:
        runtime.close()
    storage = runtime.storage
    console.print(f"Report: {storage.where(key)}", markup=False, soft_wrap=True)


@app.command()
def export(
    batch: BatchArg,
    destination: Annotated[Path, typer.Argument(help="A folder, or a path ending in .zip.", show_default=False)],
) -> None:
    """Copy a batch's pictures (by name), sheets and results out of the store into a folder or a .zip."""
    from jobs.export import export_batch
    from jobs.storage import Storage

    settings = deployment.settings_with(deployment.running(Settings()))
    try:
        count = export_batch(_engine(settings), Storage(settings.resolved_storage_url()), batch, destination)
    except GenqError as error:
        raise _refuse(error) from None
    console.print(f"{count} files of batch {batch} written to {destination}", highlight=False)


@app.command()
def pause(batch: BatchArg) -> None:
    """Send nothing more of a batch, fleet-wide, until `genq resume`; what runs is still collected."""
    from jobs.control import pause_batch

    settings = deployment.settings_with(deployment.running(Settings()))
    try:
        back = pause_batch(_engine(settings), batch)
    except GenqError as error:
        raise _refuse(error) from None
    _kick(settings)
    console.print(f"batch {batch} paused ({back} queued jobs back to waiting); what runs is still collected; "
                  f"`genq resume {batch}` resumes it", highlight=False)  # fmt: skip


@app.command()
def resume(
    batch: BatchArg,
    budget: Annotated[
        int | None, typer.Option("--budget", min=1, help="A new budget in credits (to go on past the old one).")
    ] = None,
) -> None:
    """Send a paused batch again, with a higher budget if it stopped at its own."""
    from jobs.control import resume_batch

    settings = deployment.settings_with(deployment.running(Settings()))
    try:
        found = resume_batch(_engine(settings), batch, budget=budget)
    except GenqError as error:
        raise _refuse(error) from None
    _kick(settings)
    cap = f" (budget {found.budget} credits)" if found.budget is not None else ""
    console.print(f"batch {batch} resumed{cap}", highlight=False)


@app.command()
def cancel(
    batch: BatchArg,
    running: Annotated[
        bool,
        typer.Option(
            "--running",
            help="Also stop polling its running provider tasks (and delete them at "
            "the provider where its API can); their pictures are lost.",
        ),
    ] = False,
) -> None:
    """Cancel a batch: its waiting jobs become `canceled` and nothing more is sent; the batch ends
    with its results once what still runs is collected (at once with --running)."""
    from jobs.control import cancel_batch

    settings = deployment.settings_with(deployment.running(Settings()))
    engine = _engine(settings)
    try:
        canceled = cancel_batch(engine, batch, running=running)
    except GenqError as error:
        raise _refuse(error) from None
    deleted = _end_canceled(settings, batch, canceled.tasks)
    _kick(settings)
    ran = f", {canceled.running} running" if running else ""
    gone = f"; {deleted} provider tasks deleted at the provider" if deleted else ""
    console.print(f"batch {batch} canceled: {canceled.waiting} waiting{ran} jobs canceled{gone}", highlight=False)
    if batch_status(engine, batch).final:
        console.print(f"batch {batch} is final; `genq status {batch}` shows it", highlight=False)


def _end_canceled(settings: Settings, batch: int, tasks: tuple[tuple[str, str], ...]) -> int:
    """Delete the canceled tasks at their provider (where it can) and end the batch if nothing of it
    runs; a missing key or store leaves both to the fleet's next round. How many were deleted."""
    from workers.finish import finish_batch_if_done
    from workers.polling import delete_at_provider
    from workers.runtime import Runtime

    runtime = Runtime(settings)
    deleted = 0
    try:
        if tasks:
            deleted = delete_at_provider(runtime, tasks)
        finish_batch_if_done(runtime, batch)
    except GenqError as error:
        errors.print(f"the workers finish it: {escape(str(error))}", highlight=False)
    finally:
        runtime.close()
    return deleted


account_app = typer.Typer(
    help="Take a provider account out of rotation by hand, and put it back.", no_args_is_help=True
)
app.add_typer(account_app, name="account")

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _seconds(text: str) -> float:
    """``30m``, ``2h``, ``1h30m``, ``90s`` in seconds."""
    found = _DURATION.fullmatch(text.strip())
    if not text.strip() or found is None:
        raise typer.BadParameter(f"{text!r}: give a time such as 30m, 2h, 1h30m or 90s")
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


@account_app.command("pause")
def account_pause(
    name: Annotated[str, typer.Argument(help="The account's name in accounts.yaml.", show_default=False)],
    for_: Annotated[
        str | None, typer.Option("--for", help="How long: 30m, 2h, 1h30m (until resumed if left out).")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, as `genq status` shows it.")] = "",
) -> None:
    """Send nothing more with an account, fleet-wide; its running tasks are still polled (they are paid)."""
    from jobs.control import pause_account

    settings = deployment.settings_with(deployment.running(Settings()))
    seconds = _seconds(for_) if for_ is not None else None
    try:
        accounts = load_accounts(settings.accounts, require_keys=False)
        if name not in accounts:
            raise ConfigError(f"no account named {name!r} in {settings.accounts}; known: {', '.join(accounts)}")
        pause_account(_engine(settings), name, seconds=seconds, reason=reason)
    except GenqError as error:
        raise _refuse(error) from None
    _kick(settings)
    how_long = f"for {render.duration(seconds)}" if seconds is not None else f"until `genq account resume {name}`"
    console.print(f"account {name} paused {how_long}", highlight=False)


@account_app.command("resume")
def account_resume(name: Annotated[str, typer.Argument(help="The account's name.", show_default=False)]) -> None:
    """Put an account paused by hand back in rotation."""
    from jobs.control import resume_account

    settings = deployment.settings_with(deployment.running(Settings()))
    was = resume_account(_engine(settings), name)
    _kick(settings)
    console.print(f"account {name} {'resumed' if was else 'was not paused by hand'}", highlight=False)


@app.command()
def up(
    sandbox: SandboxOpt = False,
    concurrency: Annotated[int, typer.Option(help="Worker threads.")] = 8,
) -> None:
    """Start genq on this machine in the background: Redis, a worker with beat, and the sandbox if asked."""
    settings = Settings()
    found = deployment.running(settings)
    if found is not None:
        console.print(f"genq is already up here ({found.describe()}); `genq down` stops it", highlight=False)
        return
    try:
        started = deployment.up(settings, sandbox=sandbox, concurrency=concurrency)
    except GenqError as error:
        raise _refuse(error) from None
    console.print(f"genq is up ({started.describe()})", highlight=False)
    console.print(f"logs: {settings.var_dir.resolve() / 'logs'}; `genq down` stops it", highlight=False)


@app.command()
def down() -> None:
    """Stop what `genq up` started here, and nothing else."""
    settings = Settings()
    found = deployment.running(settings)
    if found is None:
        console.print(f"genq is not running in {settings.var_dir.resolve()}", highlight=False)
        return
    deployment.down(found)
    console.print("genq is down", highlight=False)


@app.command()
def plan(
    file: FileArg,
    sandbox: Annotated[bool, typer.Option("--sandbox", help="Plan for the sandbox's accounts and latency.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What a batch will spend before anything is sent: requests, credits, and time at its accounts' limits."""
    settings = deployment.settings_with(deployment.running(Settings()))
    config = None
    try:
        if sandbox:
            from jobs.embedded import sandbox_config

            config = sandbox_config()
            spec = load_batch(file, display_name=str(file))
            accounts = _sandbox_accounts(config)

            problems = batch_problems(spec, accounts)
            if problems:
                raise BatchFileError(problems)
        else:
            spec = _checked_batch(file, settings, require_keys=False)
            accounts = None
    except ConfigError as error:
        raise _refuse(ConfigError(f"{error}; or plan for the sandbox with --sandbox")) from None
    except GenqError as error:
        raise _refuse(error) from None
    estimate = _plan(spec, settings, config, accounts=accounts, spent_today=_spent_today(settings, config is not None))
    if as_json:
        sys.stdout.write(json.dumps(estimate.to_json(), indent=2) + "\n")
    else:
        render.print_plan(console, estimate)


def _spent_today(settings: Settings, sandbox: bool) -> dict[str, int]:
    """Credits each account holds today, for the plan's daily caps; none where no account has a cap
    or the database cannot be read (a plan is made before anything runs)."""
    from sqlalchemy.exc import SQLAlchemyError

    from jobs.control import credits_today

    try:
        accounts = {} if sandbox else load_accounts(settings.accounts, require_keys=False)
        if not any(account.daily_credits for account in accounts.values()):
            return {}
        with Session(_engine(settings)) as session:
            return credits_today(session, list(accounts))
    except (GenqError, SQLAlchemyError):
        return {}


def _sandbox_accounts(config: SandboxConfig) -> dict[str, Account]:
    """The accounts a sandbox run gets, for a plan made before it runs."""
    from jobs.embedded import sandbox_accounts

    entries = sandbox_accounts(config, "http://127.0.0.1")
    return {str(entry["name"]): Account.model_validate(entry) for entry in entries}


def _plan(
    spec: BatchSpec,
    settings: Settings,
    sandbox: SandboxConfig | None = None,
    *,
    accounts: Mapping[str, Account] | None = None,
    spent_today: Mapping[str, int] | None = None,
) -> Plan:
    """The plan. Generation times: the sandbox's configured latency with ``sandbox``; else learned
    by the fleet where the broker answers, else each provider's typical time."""
    import redis

    from jobs.redisserver import client_url
    from workers.plan import plan_batch
    from workers.providers import ADAPTERS
    from workers.timing import CompletionTimes

    if sandbox is not None:
        accounts = accounts or _sandbox_accounts(sandbox)
        config = sandbox
        return plan_batch(
            spec,
            accounts,
            lambda provider, _model: config.provider(provider).latency_mean,
            spread=settings.rate_spread,
            spent_today=spent_today,
        )
    client = redis.Redis.from_url(client_url(settings.resolved_redis_url()), socket_timeout=2)
    learned = CompletionTimes(client, default=settings.first_poll_delay)

    def generation_seconds(provider: str, model: str | None) -> float:
        try:
            seen = learned.learned(provider, model)
        except RedisUnavailable:
            seen = None
        return ADAPTERS[provider].typical_seconds if seen is None else seen

    try:
        accounts = accounts or load_accounts(settings.accounts, require_keys=False)
        return plan_batch(spec, accounts, generation_seconds, spread=settings.rate_spread, spent_today=spent_today)
    finally:
        client.close()


@app.command()
def submit(
    file: FileArg, force: ForceOpt = False, on_uncertain: OnUncertainOpt = None, budget: BudgetOpt = None
) -> None:
    """Submit a batch to a running deployment (`genq up`, or GENQ_REDIS_URL); prints the batch id.

    The file is checked in one reading and written in a second, a row at a time, so a catalog of
    a million rows costs no more memory than one of a hundred."""
    from jobs.batchfile import open_batch
    from jobs.checks import row_checks
    from jobs.producer import produce

    settings = deployment.settings_with(deployment.running(Settings()))
    try:
        deployment.require_broker(settings)
        check = row_checks(lambda: load_accounts(settings.accounts), trusted=settings.trusted())
        batch = open_batch(file, display_name=str(file), check=check)
    except GenqError as error:
        raise _refuse(error) from None
    policy = on_uncertain and on_uncertain.value
    try:
        produced = produce(_engine(settings), batch, force=force, on_uncertain=policy, budget=budget)
    except BatchFileError as error:  # the file changed between its check and its rows' writing
        raise _refuse(error) from None
    _kick(settings)
    if not produced.created:
        errors.print(f"this file is already batch {produced.batch.id}; --force makes a new one")
    console.print(produced.batch.id)


@app.command()
def status(
    batch: Annotated[int | None, typer.Argument(help="A batch id; all recent batches if left out.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where batches stand: jobs per state, images stored, failures; and each account's minute."""
    settings = deployment.settings_with(deployment.running(Settings()))
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
    console.print(render.batches_table(found, console.width))
    for s in found:
        render.print_paused(console, s, prefix=f"batch {s.id} ")
        render.print_lost_answers(console, s, prefix="" if batch is not None else f"batch {s.id}: ")
        if batch is not None:
            render.print_failures(console, s)
    if accounts:
        console.print(render.accounts_table(accounts, console.width))


def _account_reports(settings: Settings) -> list[AccountReport]:
    """Every account's standing; none when there is no accounts file to read or no broker."""
    from workers.fleet import account_reports
    from workers.runtime import Runtime

    try:
        accounts = load_accounts(settings.accounts, require_keys=False)
    except ConfigError:
        return []
    if not deployment.broker_answers(settings):
        return []
    runtime = Runtime(settings)
    try:
        return account_reports(runtime, accounts)
    finally:
        runtime.close()


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
    _need_broker()
    command = ["celery", "-A", "workers", "worker", "--queues", queues, "--concurrency", str(concurrency)]
    command += ["--pool", pool, "--loglevel", loglevel] + (["--beat"] if beat else [])
    _exec_celery(command)


@app.command("beat")
def run_beat(loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO") -> None:
    """Run the periodic schedule: dispatch, poll sweeps and the reconciler. Exactly one per deployment."""
    _need_broker()
    schedule = Settings().var_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    _exec_celery(["celery", "-A", "workers", "beat", "--loglevel", loglevel, "--schedule", str(schedule)])


@app.command()
def watch() -> None:
    """Submit every batch file that lands in the inbox, then move it to done/ or failed/."""
    from jobs.inbox import watch as watch_inbox

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _need_broker()
    migrate(make_engine(settings.resolved_database_url()))
    console.print(f"watching {settings.batches_dir / 'inbox'}")
    with contextlib.suppress(KeyboardInterrupt):
        watch_inbox(settings, on_batch=lambda _batch_id: _kick(settings))


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def flower(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 5555,
    address: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    basic_auth: Annotated[
        str | None,
        typer.Option(
            "--basic-auth", envvar="FLOWER_BASIC_AUTH", help="user:password (or FLOWER_BASIC_AUTH).", show_default=False
        ),
    ] = None,
    unauthenticated: Annotated[
        bool, typer.Option("--unauthenticated", help="No password, on a loopback address only (for this machine).")
    ] = False,
) -> None:
    """Serve Flower for this deployment; never without a password except on loopback by asking."""
    if not basic_auth and not unauthenticated:
        raise _refuse(
            ConfigError("Flower shows every task of the deployment: give --basic-auth USER:PASSWORD "
                        "(or FLOWER_BASIC_AUTH), or --unauthenticated to serve it on loopback only")
        )  # fmt: skip
    if not basic_auth and address not in LOOPBACK:
        raise _refuse(ConfigError(f"--unauthenticated serves on loopback only, not on {address}"))
    _need_broker()
    command = ["celery", "-A", "workers", "flower", f"--port={port}", f"--address={address}"]
    if basic_auth:
        os.environ["FLOWER_BASIC_AUTH"] = basic_auth  # the environment, not argv: `ps` shows argv to all
    else:
        errors.print(f"[yellow]warning:[/] Flower without a password, on {address}:{port} only", highlight=False)
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    _exec_celery(command)


@app.command()
def metrics(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 9464,
    address: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
) -> None:
    """Serve Prometheus metrics of the deployment at /metrics: each account's minute, in-flight places,
    pauses, 429s and credits, each batch's jobs by state; read from the database and Redis at each scrape."""
    from workers.metrics import serve
    from workers.runtime import Runtime

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _need_broker()
    migrate(make_engine(settings.resolved_database_url()))
    runtime = Runtime(settings)
    try:
        runtime.accounts  # noqa: B018  # a bad accounts file is refused now, not at the first scrape
    except ConfigError as error:
        raise _refuse(error) from None
    console.print(f"metrics on http://{address}:{port}/metrics")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            serve(runtime, port=port, address=address)
    except OSError as error:
        raise _refuse(ConfigError(f"cannot serve metrics on {address}:{port}: {error.strerror or error}")) from None


@app.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date (every genq process also does this at start)."""
    settings = Settings()
    migrate(make_engine(settings.resolved_database_url()))
    console.print("database is up to date")


def _need_broker() -> Settings:
    """The settings of the deployment found here; exits with one line naming `genq up` if there is none."""
    settings = deployment.settings_with(deployment.running(Settings()))
    try:
        deployment.require_broker(settings)
    except GenqError as error:
        raise _refuse(error) from None
    return settings


def _exec_celery(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", *argv])


def _kick(settings: Settings) -> None:
    """Wake the dispatcher now rather than at its next tick; harmless when no broker answers."""
    import redis

    from jobs.rediscalls import talking_to_redis
    from jobs.redisserver import client_url
    from workers.app import make_app

    try:
        with talking_to_redis("waking the dispatcher"):
            redis.Redis.from_url(client_url(settings.resolved_redis_url()), socket_timeout=1).ping()
            make_app(settings).send_task("genq.dispatch")
    except RedisUnavailable:
        pass


def main() -> None:
    try:
        app()
    except (ConfigError, DatabaseError) as error:
        errors.print(f"[red]error:[/] {error}", highlight=False)
        sys.exit(EXIT_INVALID)


if __name__ == "__main__":
    main()
