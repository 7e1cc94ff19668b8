"""Keeping a claimed trial's lease alive while it trains.

A background thread renews the lease every quarter of its length. If the
results DB says the claim no longer holds the trial (the lease expired and the
scheduler requeued it), training is told to stop: its result would be refused.
A DB that cannot be reached is retried at the next beat; the lease's length is
how long an outage the trial survives.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from seqsweep.db import ClaimedTrial, ResultStore
from seqsweep.errors import SeqsweepError

log = logging.getLogger("seqsweep.worker")


class Lease:
    """Context manager that renews ``claimed``'s lease in a thread until exit."""

    def __init__(self, store: ResultStore, claimed: ClaimedTrial, lease_s: float) -> None:
        self._store = store
        self._claimed = claimed
        self._lease_s = lease_s
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lease-{claimed.trial_id}", daemon=True
        )

    @property
    def lost(self) -> bool:
        """True once the DB has said this claim no longer holds the trial."""
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
        label = f"study {self._claimed.study_name} trial {self._claimed.number}"
        while not self._stop.wait(self._lease_s / 4):
            try:
                held = self._store.heartbeat(self._claimed, lease_s=self._lease_s)
            except SeqsweepError as exc:
                log.warning("%s: cannot renew the lease (will retry): %s", label, exc)
                continue
            if not held:
                log.warning("%s: lease lost (the trial was requeued); stopping it", label)
                self._lost.set()
                return
