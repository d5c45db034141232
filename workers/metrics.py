"""What a dashboard reads at 2 a.m., for Prometheus: each account's minute, in-flight places, pause,
429s, errors and credits, and each batch's jobs by state.

The metrics process is not a worker: it holds no counters of its own. Every scrape reads the state
where it lives (the database for jobs, events and costs; Redis for the limiter's logs, its request
counters and the learned first-poll delays), so any number of workers on any hosts add up, and a
restarted metrics process loses nothing. Labels are account, provider, kind, batch and reason; never
a key (an account is named, its key only lives in the environment), and every configured key is
scrubbed from label values all the same.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, col, select

from jobs.errors import RedisUnavailable
from jobs.models import RATE_LIMITED, Batch, Job, JobEvent, ProviderTask, utcnow
from jobs.rediscalls import talking_to_redis
from jobs.spec import JobSpec
from jobs.states import JobState, TaskState
from workers import keys
from workers.fleet import account_reports
from workers.providers import ADAPTERS
from workers.runtime import Runtime

log = logging.getLogger(__name__)

KINDS = ("submit", "poll")
"""The kinds of request a 429 is recorded for (its event's detail names one)."""
FINISHED_BATCHES_SHOWN = timedelta(days=1)
"""A finished batch stays in the per-batch series this long, then leaves them (bounded series)."""
LOST_ANSWER = "answer lost"


class GenqCollector(Collector):
    """Reads the deployment's state at each scrape; a source that does not answer is reported by
    ``genq_source_up`` and leaves out only its own series."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        up = _gauge("genq_source_up", "Whether a source answered this scrape (1) or not (0).", "source")
        database = self._families(self._from_database)
        redis_side = self._families(self._from_redis)
        up.add_metric(["database"], 0.0 if database is None else 1.0)
        up.add_metric(["redis"], 0.0 if redis_side is None else 1.0)
        yield up
        for family in (database or []) + (redis_side or []):
            yield self._scrubbed(family)

    def _families(self, read: Callable[[], Iterator[Metric]]) -> list[Metric] | None:
        try:
            return list(read())
        except RedisUnavailable as error:
            log.warning("metrics: Redis did not answer: %s", error)
        except Exception:  # a scrape must answer what it can; the source's series are left out
            log.exception("metrics: reading %s failed", getattr(read, "__name__", read))
        return None

    def _from_database(self) -> Iterator[Metric]:
        runtime, accounts = self.runtime, self.runtime.accounts
        reports = account_reports(runtime, accounts)
        in_flight = _gauge(
            "genq_account_in_flight", "Jobs holding a place of the account's cap.", "account", "provider"
        )
        cap = _gauge(
            "genq_account_in_flight_limit", "Jobs the account may have running at once.", "account", "provider"
        )
        rpm = _gauge(
            "genq_account_requests_per_minute_limit",
            "Requests a minute the account's key may send.",
            "account",
            "provider",
        )
        # Pauses come from the report: a 429's (Redis) and a person's (the database) alike.
        paused = _gauge(
            "genq_account_paused",
            "Whether the account is paused for the fleet (1) or not (0), and why.",
            "account",
            "provider",
            "reason",
        )
        paused_for = _gauge(
            "genq_account_paused_seconds",
            "Seconds until the paused account may send again; 0 also while paused by hand until resumed.",
            "account",
            "provider",
        )
        for report in reports:
            labels = [report.name, report.provider]
            in_flight.add_metric(labels, report.in_flight)
            cap.add_metric(labels, report.max_in_flight)
            rpm.add_metric(labels, report.rpm)
            is_paused = report.paused_for > 0 or report.paused_by_hand
            paused.add_metric([*labels, report.paused_because if is_paused else ""], 1.0 if is_paused else 0.0)
            paused_for.add_metric(labels, max(report.paused_for, 0.0))
        yield from (in_flight, cap, rpm, paused, paused_for)
        providers = {name: account.provider for name, account in accounts.items()}
        with Session(runtime.engine) as session:
            yield from self._errors(session, providers)
            yield self._credits(session, providers)
            yield self._batches(session)

    def _errors(self, session: Session, providers: dict[str, str]) -> Iterator[Metric]:
        """429s by the kind of request turned away, and provider errors by kind, from the jobs' events."""
        limited: Counter[tuple[str, str]] = Counter()
        rows = session.exec(
            select(JobEvent.detail, func.count())
            .where(col(JobEvent.event) == RATE_LIMITED)
            .group_by(col(JobEvent.detail))
        ).all()
        for detail, count in rows:  # details vary by Retry-After: few rows all the same
            account, _, rest = detail.partition(":")
            kind = next((kind for kind in KINDS if kind in rest), "")
            if kind:
                limited[(account, kind)] += count
        rate_limited = _counter(
            "genq_account_rate_limited", "Requests the provider turned away with a 429.", "account", "provider", "kind"
        )
        for account, provider in providers.items():
            for kind in KINDS:
                rate_limited.add_metric([account, provider, kind], limited[(account, kind)])
        yield rate_limited

        lost = dict(
            session.exec(
                select(Job.account, func.count())
                .join(JobEvent, col(JobEvent.job_id) == col(Job.id))
                .where(col(JobEvent.event) == LOST_ANSWER)
                .group_by(col(Job.account))
            ).all()
        )
        failed = dict(
            session.exec(
                select(ProviderTask.account, func.count())
                .where(col(ProviderTask.state) == TaskState.FAILED.value)
                .group_by(col(ProviderTask.account))
            ).all()
        )
        errors = CounterMetricFamily(
            "genq_account_provider_errors",
            "Provider errors: 429s (rate_limited), submits whose answer was lost (answer_lost), tasks the "
            "provider failed or that were given up (task_failed).",
            labels=["account", "provider", "kind"],
        )
        for account, provider in providers.items():
            errors.add_metric([account, provider, "rate_limited"], sum(limited[(account, kind)] for kind in KINDS))
            errors.add_metric([account, provider, "answer_lost"], lost.get(account, 0))
            errors.add_metric([account, provider, "task_failed"], failed.get(account, 0))
        yield errors

    def _credits(self, session: Session, providers: dict[str, str]) -> Metric:
        """Credits of the jobs that succeeded, each priced by its provider's adapter."""
        spent: Counter[str] = Counter()
        rows = session.exec(
            select(Job.account, Job.provider, Job.spec).where(col(Job.state) == JobState.SUCCEEDED.value)
        ).yield_per(1000)
        for account, provider, spec in rows:
            adapter = ADAPTERS.get(provider)
            if account is None or adapter is None:
                continue
            try:
                spent[account] += adapter.cost(JobSpec.model_validate(spec)).credits
            except ValidationError:  # a row an older genq wrote: no price to give it
                continue
        credits = _counter(
            "genq_account_credits_spent", "Credits spent by the jobs that succeeded.", "account", "provider"
        )
        for account, provider in providers.items():
            credits.add_metric([account, provider], spent[account])
        return credits

    def _batches(self, session: Session) -> Metric:
        """Jobs by state of each batch still running or finished within ``FINISHED_BATCHES_SHOWN``."""
        since = utcnow() - FINISHED_BATCHES_SHOWN
        shown = session.exec(
            select(Batch.id, Batch.name).where((col(Batch.finished_at).is_(None)) | (col(Batch.finished_at) >= since))
        ).all()
        names = {batch_id: name for batch_id, name in shown if batch_id is not None}
        counts = session.exec(
            select(Job.batch_id, Job.state, func.count())
            .where(col(Job.batch_id).in_(list(names)))
            .group_by(col(Job.batch_id), col(Job.state))
        ).all()
        by_batch = {(batch_id, state): count for batch_id, state, count in counts}
        jobs = _gauge("genq_batch_jobs", "Jobs of the batch in each state.", "batch", "name", "state")
        for batch_id, name in sorted(names.items()):
            for state in JobState:
                jobs.add_metric([str(batch_id), name, state.value], by_batch.get((batch_id, state.value), 0))
        return jobs

    def _from_redis(self) -> Iterator[Metric]:
        runtime = self.runtime
        limiter = runtime.limiter
        used = _gauge(
            "genq_account_requests_last_minute",
            "Requests in the account's sliding minute (its limit's window).",
            "account",
            "provider",
        )
        requests = _counter(
            "genq_account_requests",
            "Requests taken from the account's allowance, by kind.",
            "account",
            "provider",
            "kind",
        )
        with talking_to_redis("reading the accounts' limits for metrics"):
            for account in runtime.accounts.values():
                standing = limiter.standing(account.name)
                labels = [account.name, account.provider]
                used.add_metric(labels, standing.used)
                counts = limiter.requests(account.name)
                for kind in sorted({*KINDS, *counts}):
                    requests.add_metric([*labels, kind], counts.get(kind, 0))
            delays = runtime.redis.hgetall(keys.first_poll())
        yield from (used, requests)
        delay = _gauge(
            "genq_first_poll_delay_seconds",
            "The first-poll delay learned from finished tasks, by provider and model.",
            "provider",
            "model",
        )
        for field, value in sorted(delays.items()):  # type: ignore[union-attr]
            provider, _, model = _text(field).partition(":")
            delay.add_metric([provider, model], float(value))
        yield delay

    def _scrubbed(self, family: Metric) -> Metric:
        """Label values with every configured key replaced, should one ever reach a label."""
        secrets = self.runtime.secrets
        if secrets:
            for sample in family.samples:
                for name, value in sample.labels.items():
                    for secret in secrets:
                        if secret in value:
                            value = value.replace(secret, "***")
                    sample.labels[name] = value
        return family


def _gauge(name: str, documentation: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _counter(name: str, documentation: str, *labels: str) -> CounterMetricFamily:
    """``name`` without ``_total``: the exposition adds it."""
    return CounterMetricFamily(name, documentation, labels=list(labels))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def registry_for(runtime: Runtime) -> CollectorRegistry:
    """A registry of genq's collector alone: the metrics process's own Python metrics say nothing of the run."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GenqCollector(runtime))
    return registry


def serve(runtime: Runtime, *, port: int, address: str, stop: threading.Event | None = None) -> None:
    """Serve ``/metrics`` on ``address:port`` until ``stop`` is set (or the process is interrupted)."""
    server, thread = start_http_server(port, addr=address, registry=registry_for(runtime))
    log.info("metrics on http://%s:%d/metrics", address, port)
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
