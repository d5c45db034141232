"""A tiny Celery app for ``tests/test_broker_restart.py``: the project's broker settings, two tasks and
no database, so a ``celery worker`` of it starts in a second.

The worker reads its broker from ``GENQ_REDIS_URL`` and its marker directory from ``GENQ_TEST_MARKS``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery

from jobs.settings import Settings
from workers import brokerfix
from workers.app import make_app

# The settings of workers.app that decide how the worker holds, acks and restores messages.
BROKER_SETTINGS = (
    "broker_url",
    "broker_connection_retry_on_startup",
    "broker_transport_options",
    "result_backend",
    "task_ignore_result",
    "task_acks_late",
    "task_reject_on_worker_lost",
    "worker_prefetch_multiplier",
    "worker_send_task_events",
    "task_send_sent_event",
    "task_serializer",
    "accept_content",
    "task_default_queue",
    "task_queues",
)
HOLD_LIMIT = 60.0
"""Seconds; the longest a held task waits for its release (a bound, so a failed test never hangs)."""

# The patch workers.app should install too. Installing it twice is safe.
brokerfix.install()


def make_test_app(redis_url: str) -> Celery:
    project = make_app(Settings(redis_url=redis_url)).conf
    app = Celery("genq-broker-restart")
    app.conf.update({name: project[name] for name in BROKER_SETTINGS})

    @app.task(name="brokerrestart.hold")
    def hold(tag: str, release: str) -> None:
        """Stay busy, holding the message unacked, until the test creates the file ``release``."""
        marks = Path(os.environ["GENQ_TEST_MARKS"])
        (marks / f"started-{tag}").touch()
        deadline = time.monotonic() + HOLD_LIMIT
        while not (marks / release).exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    @app.task(name="brokerrestart.probe")
    def probe(tag: str) -> None:
        (Path(os.environ["GENQ_TEST_MARKS"]) / f"probe-{tag}").touch()

    return app


app = make_test_app(Settings().resolved_redis_url())
