"""Recovery: give every trial that lost its worker or its message another go.

Exactly-once delivery does not exist, so the results DB decides. Two things
go missing, and one pass finds both:

* **a worker** (kill -9, OOM, lost machine): its trial stays ``running`` but its
  lease stops being renewed. Once the lease expires the trial is requeued, or
  failed with the reason after the study's ``max_attempts``.
* **a message** (a broker restarted without persistence; the embedded broker,
  which keeps acknowledgements in memory, losing a killed worker's message):
  the trial stays ``queued`` with no message anywhere. A queued trial is taken
  for lost when the broker's queue has been empty for two passes in a row
  while the trial's message is older than the grace period; a false alarm only
  sends a duplicate, which the claim turns away.

Both ``launch`` (on every few polls) and ``python -m scheduler recover`` run it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from scheduler.enqueue import enqueue_trials
from seqsweep.broker import check_broker, make_app, queue_depth
from seqsweep.db import ResultStore, StudyRecord
from seqsweep.vocab import StudyStatus

#: A message younger than this is never taken for lost: a worker may have just
#: taken it off the queue and not yet claimed its trial.
ORPHAN_GRACE_S = 10.0


@dataclass
class OrphanWatch:
    """Queued trials seen without a message on an earlier pass, per study."""

    suspects: dict[int, set[int]] = field(default_factory=dict)

    def confirm(self, study_id: int, suspects: set[int]) -> set[int]:
        """Return the suspects also seen last time, and remember these for next time."""
        confirmed = suspects & self.suspects.get(study_id, set())
        self.suspects[study_id] = suspects - confirmed
        return confirmed


@dataclass(frozen=True)
class RecoveryReport:
    """What one pass did to one study."""

    study: str
    requeued: tuple[int, ...] = ()
    gave_up: tuple[int, ...] = ()
    cancelled: tuple[int, ...] = ()
    lost_messages: tuple[int, ...] = ()
    sent: int = 0

    def lines(self) -> list[str]:
        """Human-readable lines for what changed; empty when nothing did."""
        out = []
        if self.requeued:
            out.append(f"requeued trials {_numbers(self.requeued)}: their workers vanished")
        if self.gave_up:
            out.append(f"failed trials {_numbers(self.gave_up)}: out of attempts")
        if self.cancelled:
            out.append(
                f"cancelled trials {_numbers(self.cancelled)}: their workers vanished "
                "and the study is cancelled"
            )
        if self.lost_messages:
            out.append(f"re-sent lost messages of trials {_numbers(self.lost_messages)}")
        return out

    def __add__(self, later: RecoveryReport) -> RecoveryReport:
        return RecoveryReport(
            study=self.study,
            requeued=self.requeued + later.requeued,
            gave_up=self.gave_up + later.gave_up,
            cancelled=self.cancelled + later.cancelled,
            lost_messages=self.lost_messages + later.lost_messages,
            sent=self.sent + later.sent,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "requeued": list(self.requeued),
            "gave_up": list(self.gave_up),
            "cancelled": list(self.cancelled),
            "lost_messages": list(self.lost_messages),
            "sent": self.sent,
        }


def recover_pass(
    store: ResultStore, app: Any, study: StudyRecord, watch: OrphanWatch
) -> RecoveryReport:
    """Requeue lost trials, re-send lost messages and send every unsent message of ``study``."""
    recovery = store.recover_lost(study.id)
    lost: list[int] = []
    if queue_depth(app) == 0:
        suspects = set(store.queued_waiting(study.id, longer_than_s=ORPHAN_GRACE_S))
        lost = store.mark_unsent(study.id, watch.confirm(study.id, suspects))
    else:
        watch.confirm(study.id, set())
    sent = store.send_unsent(study.id, lambda numbers: enqueue_trials(app, study, numbers))
    return RecoveryReport(
        study=study.name,
        requeued=recovery.requeued,
        gave_up=recovery.gave_up,
        cancelled=recovery.cancelled,
        lost_messages=tuple(lost),
        sent=sent,
    )


def recover(
    store: ResultStore, broker_url: str, study_name: str | None, confirm_after_s: float = 2.0
) -> list[RecoveryReport]:
    """One recovery of ``study_name`` (or every unfinished study), for ``scheduler recover``.

    Lost messages need two looks at an empty queue, ``confirm_after_s`` apart.
    """
    app = make_app(broker_url, main="scheduler")
    check_broker(app, broker_url)
    if study_name is None:
        # A cancelled study may still have running trials whose workers died.
        targets = [
            s
            for s in store.list_studies()
            if s.status in (StudyStatus.RUNNING, StudyStatus.CANCELLED)
        ]
    else:
        targets = [store.require_study(study_name)]
    watch = OrphanWatch()
    first = [recover_pass(store, app, study, watch) for study in targets]
    if not any(watch.suspects.values()):
        return first
    time.sleep(confirm_after_s)
    return [
        report + recover_pass(store, app, study, watch)
        for report, study in zip(first, targets, strict=True)
    ]


def _numbers(numbers: tuple[int, ...]) -> str:
    return ", ".join(str(n) for n in numbers)
