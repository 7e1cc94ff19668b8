"""The results DB: schema, migrations and the store that reads and writes it."""

from seqsweep.db.records import (
    ClaimedTrial,
    Counts,
    EpochRecord,
    Recovery,
    StudyRecord,
    TrialRecord,
    TrialResult,
)
from seqsweep.db.store import ResultStore

__all__ = [
    "ClaimedTrial",
    "Counts",
    "EpochRecord",
    "Recovery",
    "ResultStore",
    "StudyRecord",
    "TrialRecord",
    "TrialResult",
]
