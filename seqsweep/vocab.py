"""The states a trial and a study can be in.

They are ``StrEnum`` members, so they compare equal to the plain strings stored in
the ``status`` columns, which users query with SQL: the stored words are the public
interface and never change meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TrialStatus(StrEnum):
    """Where a trial is in its life: queued -> running -> succeeded, pruned or failed."""

    #: Waiting for a worker; ``enqueued_at`` says whether its message is sent.
    QUEUED = "queued"
    #: Claimed by a worker that holds its lease.
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    #: Stopped early by the study's pruner (``--pruner``): finished, with the metrics of
    #: its last epoch; not failed, and never retried.
    PRUNED = "pruned"
    #: Recorded with its reason; not retried (it would fail the same way).
    FAILED = "failed"
    #: Dropped before it ran, or lost by its worker, in a cancelled study.
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """True for a trial that will not run (again)."""
        return self in _FINISHED_TRIAL


_FINISHED_TRIAL = frozenset(
    {TrialStatus.SUCCEEDED, TrialStatus.PRUNED, TrialStatus.FAILED, TrialStatus.CANCELLED}
)


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

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` beats ``b``."""
        return a > b if self.direction is Direction.MAXIMIZE else a < b

    def as_dict(self, value: float | None) -> dict[str, object]:
        return {"name": self.metric, "direction": str(self.direction), "value": value}


class Sampler(StrEnum):
    """How ``launch`` picks each trial's parameters (``--sampler``)."""

    #: Independent draws: trial *n* is a pure function of (seed, *n*); the article's method.
    RANDOM = "random"
    #: Scrambled Sobol points: also a pure function of (seed, *n*), spread more evenly.
    SOBOL = "sobol"
    #: Every combination of a space of choices, shuffled by the seed.
    GRID = "grid"
    #: Optuna's TPE: each trial is sampled from the finished ones while the study runs.
    TPE = "tpe"
    #: Optuna's Gaussian-process sampler (needs torch): adaptive, like tpe.
    GP = "gp"
    #: Optuna's CMA-ES sampler (needs cmaes): adaptive, like tpe.
    CMAES = "cmaes"

    @property
    def is_adaptive(self) -> bool:
        """True for a sampler that needs finished trials, so launch samples as they finish."""
        return self in (Sampler.TPE, Sampler.GP, Sampler.CMAES)


class Pruner(StrEnum):
    """Which rule stops bad trials early, at epoch ends (``--pruner``)."""

    #: Every trial trains all its epochs.
    NONE = "none"
    #: Stop a trial worse than the median of the other trials at the same epoch.
    MEDIAN = "median"
    #: Asynchronous successive halving: at each rung, only the top 1/eta go on.
    ASHA = "asha"


#: The sampler of a study launched without ``--sampler`` (and of studies stored before
#: samplers existed).
DEFAULT_SAMPLER = Sampler.RANDOM


class Task(StrEnum):
    """What a study's network predicts: a class (softmax) or a number (linear output)."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


#: What a study may optimize (``--objective``); ties go to the lower val_loss, see
#: ``seqsweep.db.sql.best_first``. ``val_auc`` needs a binary classification.
OBJECTIVES: dict[str, Objective] = {
    o.metric: o
    for o in (
        Objective("val_accuracy", Direction.MAXIMIZE),
        Objective("val_loss", Direction.MINIMIZE),
        Objective("val_auc", Direction.MAXIMIZE),
        Objective("val_mae", Direction.MINIMIZE),
        Objective("val_rmse", Direction.MINIMIZE),
    )
}
#: Which objectives make sense for each task.
TASK_OBJECTIVES: dict[Task, tuple[str, ...]] = {
    Task.CLASSIFICATION: ("val_accuracy", "val_loss", "val_auc"),
    Task.REGRESSION: ("val_loss", "val_mae", "val_rmse"),
}
#: The objective of a study launched without ``--objective``.
DEFAULT_OBJECTIVE: dict[Task, str] = {
    Task.CLASSIFICATION: "val_accuracy",
    Task.REGRESSION: "val_loss",
}
#: What a study stored before objectives existed optimizes: the classification default.
OBJECTIVE = OBJECTIVES["val_accuracy"]
