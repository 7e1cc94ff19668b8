"""What a worker process reads from its environment, read once and checked at start.

``python -m worker`` puts both URLs into the environment before Celery forks its pool
processes, so every process of a node agrees; a bad value stops the node at start with
one line instead of failing every task.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from seqsweep.settings import lease_seconds
from seqsweep.urls import resolve_db_url


@dataclass(frozen=True)
class WorkerConfig:
    """The results DB a worker writes to and the lease it holds on a claimed trial."""

    db_url: str
    lease_s: float


@functools.cache
def worker_config() -> WorkerConfig:
    """This process's configuration, from ``$SEQSWEEP_DB_URL`` and ``$SEQSWEEP_LEASE_S``."""
    return WorkerConfig(db_url=resolve_db_url(None), lease_s=lease_seconds())
