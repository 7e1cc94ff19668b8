"""Keeping the leases of claimed trials alive while they train.

A background thread renews the leases every quarter of their length. Once the
results DB says the claims no longer hold any of their trials (the leases expired
and the scheduler requeued them), training is told to stop: its results would be
refused. A pack whose members are only partly lost trains on for the others.
A DB that cannot be reached is retried at the next beat; the lease's length is
how long an outage the trial survives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import TracebackType

from seqsweep.db import ClaimedTrial, ResultStore
from seqsweep.errors import SeqsweepError

log = logging.getLogger("seqsweep.worker")


class Lease:
    """Context manager that renews the leases of ``claims`` in a thread until exit."""

    def __init__(self, store: ResultStore, claims: Sequence[ClaimedTrial], lease_s: float) -> None:
        self._store = store
        self._held = list(claims)
        self._lease_s = lease_s
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lease-{claims[0].trial_id}", daemon=True
        )

    @property
    def lost(self) -> bool:
        """True once the DB has said these claims no longer hold any of their trials."""
        return self._lost.is_set()

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._lease_s / 4):
            for claimed in list(self._held):
                label = f"study {claimed.study_name} trial {claimed.number}"
                try:
                    held = self._store.heartbeat(claimed, lease_s=self._lease_s)
                except SeqsweepError as exc:
                    log.warning("%s: cannot renew the lease (will retry): %s", label, exc)
                    continue
                if not held:
                    log.warning("%s: lease lost (the trial was requeued)", label)
                    self._held.remove(claimed)
            if not self._held:
                log.warning("every trial of this run was requeued elsewhere; stopping it")
                self._lost.set()
                return
