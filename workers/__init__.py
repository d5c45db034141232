"""How jobs move: the Celery app, its tasks, scheduling, rate limits and provider adapters.

``celery -A workers`` finds the app here.
"""

from workers.app import app

__all__ = ["app"]
