"""The Celery app: the broker, the queues, the routes and the beat schedule.

No result backend (the database holds results), late acks with redelivery of a lost worker's task,
prefetch 1, task events on for Flower. No countdown is ever longer than a minute: long waits live
in the database, and Redis would deliver a message twice after its visibility timeout.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from jobs.settings import Settings
from workers.brokerfix import install as install_brokerfix

QUEUES = ("control", "submit", "poll", "collect")
ROUTES = {
    "genq.dispatch": {"queue": "control"},
    "genq.sweep": {"queue": "control"},
    "genq.reconcile": {"queue": "control"},
    "genq.submit": {"queue": "submit"},
    "genq.poll": {"queue": "poll"},
    "genq.collect": {"queue": "collect"},
    "genq.settle": {"queue": "poll"},
}
MAX_COUNTDOWN = 60.0
"""Seconds; the longest a message may be held back by the broker."""


def make_app(settings: Settings | None = None) -> Celery:
    install_brokerfix()  # a worker holding late-acked messages must outlive a restart of Redis
    settings = settings or Settings()
    celery = Celery("genq", include=["workers.tasks"])
    celery.conf.update(
        broker_url=settings.resolved_redis_url(),
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_serializer="json",
        accept_content=["json"],
        enable_utc=True,
        timezone="UTC",
        task_default_queue="control",
        task_queues=[Queue(name) for name in QUEUES],
        task_routes=ROUTES,
        beat_schedule={
            "dispatch": _periodic("genq.dispatch", settings.dispatch_interval),
            "sweep": _periodic("genq.sweep", settings.sweep_interval),
            "reconcile": _periodic("genq.reconcile", settings.reconcile_interval),
        },
    )
    return celery


def _periodic(task: str, seconds: float) -> dict[str, object]:
    # A tick that waited longer than its own interval is stale: the next one is already on its way.
    return {"task": task, "schedule": seconds, "options": {"expires": max(seconds, 1.0)}}


app = make_app()
