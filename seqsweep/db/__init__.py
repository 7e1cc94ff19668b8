"""The results DB: schema, migrations and the store that reads and writes it."""

from seqsweep.db.records import (
    Cancellation,
    ClaimedTrial,
    Counts,
    EpochRecord,
    Recovery,
    StudyRecord,
    StudySummary,
    TrialRecord,
    TrialResult,
    WorkerCounts,
)
from seqsweep.db.store import ResultStore

__all__ = [
    "Cancellation",
    "ClaimedTrial",
    "Counts",
    "EpochRecord",
    "Recovery",
    "ResultStore",
    "StudyRecord",
    "StudySummary",
    "TrialRecord",
    "TrialResult",
    "WorkerCounts",
]
