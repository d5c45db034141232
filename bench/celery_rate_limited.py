"""genq's Celery app with Celery's own ``rate_limit`` on the submit task, for the comparison in
``bench.ratelimit``. Celery counts it per worker process, so each gets a share of the key's limit."""

from __future__ import annotations

import os

from workers import app

app.conf.task_annotations = {"genq.submit": {"rate_limit": os.environ["GENQ_BENCH_CELERY_RATE_LIMIT"]}}

__all__ = ["app"]
