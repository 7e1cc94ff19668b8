"""The worker's Celery app, configured from ``$SEQSWEEP_BROKER_URL`` or the default.

The URL is read when the configuration is first used, not at import: ``python -m worker``
imports this package before it puts its ``--broker`` into the environment.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from seqsweep.broker import celery_config, make_app
from seqsweep.urls import resolve_broker_url
from worker.gpus import pin_pool_process

app = make_app(lambda: resolve_broker_url(None), main="worker", include=["worker.tasks"])


@signals.worker_process_init.connect
def _pin_gpu(**_: Any) -> None:
    """Under ``--gpus``, show this pool process its one GPU before it imports a backend."""
    from billiard.process import current_process

    index = getattr(current_process(), "index", 0) or 0
    gpu = pin_pool_process(index)
    if gpu is not None:
        logging.getLogger(__name__).info("pool process %d pinned to GPU %d", index, gpu)


@signals.worker_process_init.connect
def _warm_up(**_: Any) -> None:
    """Import Keras and train a tiny pack in the background (after ``_pin_gpu``, connected
    first: the backend must see this process's one GPU from its import on)."""
    from worker import warm

    warm.start()


@signals.worker_init.connect
def _match_transport_options(sender: Any = None, **_: Any) -> None:
    """Recompute transport options when ``celery -A worker worker -b URL`` set another broker."""
    if sender is not None and sender.app is app:
        app.conf.broker_transport_options = celery_config(app.conf.broker_url)[
            "broker_transport_options"
        ]
