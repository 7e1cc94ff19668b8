"""A study's pruner at work: each epoch's end is written to the results DB, and the
trials that stop there are decided from what every trial of the study reached.

The worker hands :func:`epoch_judge` to training; the rules are ``seqsweep.pruning``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from seqsweep.db import ClaimedTrial, EpochRecord, ResultStore
from seqsweep.errors import ConnectionFailedError
from seqsweep.pruning import continues
from seqsweep.settings import StudySettings
from seqsweep.trial.packed import EpochJudge
from seqsweep.vocab import Pruner

log = logging.getLogger("seqsweep.worker")


def epoch_judge(
    store: ResultStore, claims: Sequence[ClaimedTrial], settings: StudySettings
) -> EpochJudge | None:
    """What stops ``claims`` early under the study's pruner; None without one."""
    if settings.pruner is Pruner.NONE:
        return None
    by_number = {c.number: c for c in claims}
    metric = settings.objective

    def stops_at(epoch: int, records: dict[int, EpochRecord]) -> set[int]:
        rows = [(by_number[n], r) for n, r in records.items()]
        try:
            reached = store.record_epoch(epoch, rows, metric)
        except ConnectionFailedError as exc:
            # No decision without the DB: train on (the epochs are written at the end).
            log.warning("epoch %d of trials %s: %s; not pruned", epoch, sorted(records), exc)
            return set()
        stop = set()
        for number, record in records.items():
            own = getattr(record, metric)
            epochs = int(by_number[number].params.get("epochs", settings.epochs))
            others = [v for n, v in reached.items() if n != number]
            if own is not None and not continues(settings, epoch, epochs, own, others):
                stop.add(number)
        return stop

    return stops_at
