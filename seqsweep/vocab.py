"""The states a trial and a study can be in.

They are ``StrEnum`` members, so they compare equal to the plain strings stored in
the ``status`` columns, which users query with SQL: the stored words are the public
interface and never change meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TrialStatus(StrEnum):
    """Where a trial is in its life: queued -> running -> succeeded or failed."""

    #: Waiting for a worker; ``enqueued_at`` says whether its message is sent.
    QUEUED = "queued"
    #: Claimed by a worker that holds its lease.
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    #: Recorded with its reason; not retried (it would fail the same way).
    FAILED = "failed"
    #: Dropped before it ran, or lost by its worker, in a cancelled study.
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """True for a trial that will not run (again)."""
        return self in _FINISHED_TRIAL


_FINISHED_TRIAL = frozenset({TrialStatus.SUCCEEDED, TrialStatus.FAILED, TrialStatus.CANCELLED})


class StudyStatus(StrEnum):
    """Whether a study still has work: running until every trial finished, or cancelled."""

    RUNNING = "running"
    COMPLETED = "completed"
    #: Its queued trials never run; a cancelled study cannot be extended.
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """True for a study with no trial left to run."""
        return self is not StudyStatus.RUNNING


class Direction(StrEnum):
    """Which way an objective improves."""

    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


@dataclass(frozen=True)
class Objective:
    """The final metric that ranks a study's trials, and which way is better."""

    metric: str
    direction: Direction


#: What every study optimizes (ties go to the lower val_loss, see ``seqsweep.db.sql.best_first``).
OBJECTIVE = Objective("val_accuracy", Direction.MAXIMIZE)
