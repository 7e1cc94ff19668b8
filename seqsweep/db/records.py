"""Frozen records that leave the store; callers never see SQLAlchemy rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from seqsweep.settings import DEFAULT_MAX_ATTEMPTS, StudySettings
from seqsweep.vocab import OBJECTIVE, Objective, StudyStatus, TrialStatus


@dataclass(frozen=True)
class StudyRecord:
    id: int
    name: str
    created_at: datetime
    seed: int
    space: dict[str, Any]
    settings: dict[str, Any]
    dataset_hash: str
    status: StudyStatus
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    @property
    def objective(self) -> Objective:
        """What ranks this study's trials (val_accuracy for a study stored before objectives)."""
        return StudySettings.from_dict(self.settings).ranking


@dataclass(frozen=True)
class TrialRecord:
    id: int
    study_id: int
    number: int
    params: dict[str, Any]
    status: TrialStatus
    attempts: int
    worker: str | None
    device: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    val_loss: float | None
    val_accuracy: float | None
    test_loss: float | None
    test_accuracy: float | None
    error: str | None
    enqueued_at: datetime | None = None
    heartbeat_at: datetime | None = None
    lease_expires_at: datetime | None = None
    pack: tuple[int, ...] | None = None
    #: Every final metric by name; None for a trial recorded before metrics were kept.
    metrics: dict[str, float] | None = None

    def metric(self, name: str) -> float | None:
        """Final metric ``name``: from ``metrics``, else its column (older trials)."""
        if self.metrics is not None and name in self.metrics:
            return self.metrics[name]
        value = getattr(self, name, None) if name in _METRIC_COLUMNS else None
        return None if value is None else float(value)


#: Final metrics that have a column of their own in ``trials``.
_METRIC_COLUMNS = frozenset({"val_loss", "val_accuracy", "test_loss", "test_accuracy"})


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None


@dataclass(frozen=True)
class ClaimedTrial:
    """What a worker needs to train a trial it has just claimed."""

    trial_id: int
    study_id: int
    study_name: str
    number: int
    params: dict[str, Any]
    seed: int
    settings: dict[str, Any]
    dataset_hash: str
    #: The claim's attempt number: the fencing token that the worker's
    #: heartbeats and result writes must present.
    attempt: int = 1


@dataclass(frozen=True)
class Recovery:
    """What one recovery pass changed in a study."""

    requeued: tuple[int, ...] = ()
    gave_up: tuple[int, ...] = ()
    #: Lost trials of a cancelled study: not requeued.
    cancelled: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.requeued or self.gave_up or self.cancelled)


@dataclass(frozen=True)
class TrialResult:
    """The final and per-epoch metrics of one successful (or pruned) trial.

    Accuracies are None for a regression trial; ``metrics`` holds every final metric
    by name (``val_loss``, ``val_mae``, ``test_rmse``, ...).
    """

    val_loss: float
    val_accuracy: float | None
    test_loss: float
    test_accuracy: float | None
    duration_s: float
    device: str
    epochs: tuple[EpochRecord, ...] = field(default=())
    pack: tuple[int, ...] | None = None  # the trial numbers trained together, in pack order
    metrics: dict[str, float] = field(default_factory=dict)
    #: Stopped early by the study's pruner; its metrics are those of its last epoch.
    pruned: bool = False


#: The order in which counts are shown and serialized: outcomes first.
COUNTS_ORDER = (
    TrialStatus.SUCCEEDED,
    TrialStatus.PRUNED,
    TrialStatus.FAILED,
    TrialStatus.RUNNING,
    TrialStatus.QUEUED,
    TrialStatus.CANCELLED,
)


@dataclass(frozen=True)
class Counts:
    """How many trials of a study are in each state."""

    total: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    pruned: int = 0

    @classmethod
    def from_states(cls, by_state: Mapping[str, int]) -> Counts:
        """Counts from ``{status: number of trials}``; a missing status counts 0."""
        return cls(
            total=sum(by_state.values()),
            **{status.value: by_state.get(status, 0) for status in TrialStatus},
        )

    @property
    def finished(self) -> int:
        """Trials that will not run (again): succeeded, pruned, failed or cancelled."""
        return sum(self.of(s) for s in TrialStatus if s.is_finished)

    def of(self, status: TrialStatus) -> int:
        """How many trials are in ``status``."""
        return int(getattr(self, status.value))

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, **{s.value: self.of(s) for s in COUNTS_ORDER}}


@dataclass(frozen=True)
class StudySummary:
    """One line of ``status``: a study, its counts and its best trial so far."""

    name: str
    created_at: datetime
    status: StudyStatus
    counts: Counts
    best_number: int | None = None
    best_val_accuracy: float | None = None
    objective: Objective = OBJECTIVE
    #: The best trial's objective value (its val_accuracy unless the study chose another).
    best_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.name,
            "created_at": self.created_at.isoformat(),
            "status": str(self.status),
            "counts": self.counts.as_dict(),
            "best_trial": self.best_number,
            "best_val_accuracy": self.best_val_accuracy,
            "objective": self.objective.as_dict(self.best_value),
        }


@dataclass(frozen=True)
class WorkerCounts:
    """How many trials of a study one worker process finished or is running."""

    worker: str
    succeeded: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cancellation:
    """What ``cancel`` changed: queued trials dropped, running ones left to finish."""

    cancelled: tuple[int, ...] = ()
    running: tuple[int, ...] = ()
