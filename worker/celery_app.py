"""The worker's Celery app, configured from ``$SEQSWEEP_BROKER_URL`` or the default.

The URL is read when the configuration is first used, not at import: ``python -m worker``
imports this package before it puts its ``--broker`` into the environment.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from seqsweep.broker import make_app
from seqsweep.settings import celery_config
from seqsweep.urls import resolve_broker_url

app = make_app(lambda: resolve_broker_url(None), main="worker", include=["worker.tasks"])


@signals.worker_init.connect
def _match_transport_options(sender: Any = None, **_: Any) -> None:
    """Recompute transport options when ``celery -A worker worker -b URL`` set another broker."""
    if sender is not None and sender.app is app:
        app.conf.broker_transport_options = celery_config(app.conf.broker_url)[
            "broker_transport_options"
        ]
