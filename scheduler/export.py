"""``export``: the best trial of a study as a ``.keras`` file, retrained from its record.

Workers keep no weights: a trial is fully determined by its parameters, the
study's stored dataset and split, and its seed (a pure function of the study
seed and the trial number), so ``export`` trains it once more in this process
and checks the result against what the worker recorded. Nothing here forks,
so building TensorFlow state in this process is safe.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.report import fmt_value
from seqsweep.db import ResultStore
from seqsweep.errors import TrialError, UsageError
from seqsweep.files import check_writable_target
from seqsweep.settings import StudySettings
from seqsweep.vocab import Task, TrialStatus

#: How far the retrained model's test accuracy may drift from the recorded one
#: (for regression: its test RMSE, relative to the recorded one). Same seed, data and
#: order give the same weights on one machine; another machine's CPU kernels or
#: thread count may round differently.
TOLERANCE = 0.02


@dataclass(frozen=True)
class ExportReport:
    """Which trial was saved where, and how its retrained test accuracy compares."""

    study: str
    trial: int
    params: dict[str, Any]
    out: Path
    recorded_test_accuracy: float | None
    exported_test_accuracy: float | None
    #: The test metric compared: test_accuracy, or test_rmse for regression.
    metric: str = "test_accuracy"
    recorded: float | None = None
    exported: float | None = None

    @property
    def difference(self) -> float | None:
        if self.recorded is None or self.exported is None:
            return None
        return abs(self.exported - self.recorded)

    @property
    def within_tolerance(self) -> bool:
        allowed = (
            TOLERANCE if self.metric == "test_accuracy" else TOLERANCE * abs(self.recorded or 0)
        )
        return self.difference is not None and self.difference <= allowed

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "trial": self.trial,
            "params": self.params,
            "out": str(self.out),
            "recorded_test_accuracy": self.recorded_test_accuracy,
            "exported_test_accuracy": self.exported_test_accuracy,
            "metric": self.metric,
            "recorded": self.recorded,
            "exported": self.exported,
            "difference": self.difference,
            "tolerance": TOLERANCE,
            "within_tolerance": self.within_tolerance,
        }


def export_best(
    store: ResultStore, study_name: str, out: Path, trial: int | None = None
) -> ExportReport:
    """Retrain trial ``trial`` (default: the best) of ``study_name`` and save it to ``out``.

    The file appears only once training succeeded: it is written beside
    ``out`` and renamed into place.
    """
    if out.suffix != ".keras":
        raise UsageError(
            f"--out {out}: Keras saves models as .keras files; use e.g. --out best.keras"
        )
    check_writable_target(out, "--out")  # before retraining, not after
    study = store.require_study(study_name)
    if trial is None:
        top = store.top_trials(study.id, 1)
        if not top:
            raise UsageError(
                f"study {study.name} has no succeeded trial yet; wait for one "
                f"(python -m scheduler status {study.name}) before exporting"
            )
        record = top[0]
    else:
        found = store.get_trials(study.id, [trial])
        if not found or found[0].status != TrialStatus.SUCCEEDED:
            state = found[0].status if found else "not in the study"
            raise UsageError(
                f"--trial {trial}: only a succeeded trial can be exported, this one is {state}; "
                f"see python -m scheduler report --study {study.name}"
            )
        record = found[0]

    # Keras is imported lazily, and only here.
    from seqsweep.trial import study_splits, train

    settings = StudySettings.from_dict(study.settings)
    metric = "test_accuracy" if settings.task is Task.CLASSIFICATION else "test_rmse"
    splits = study_splits(store.load_dataset(study.dataset_hash), study.seed, settings)
    # A packed trial is retrained in its whole pack: same batches and dropout masks.
    numbers = record.pack or (record.number,)
    params = {t.number: t.params for t in store.get_trials(study.id, numbers)}
    # A fresh, private name beside ``out``: a predictable one could be a planted symlink.
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".keras")
    os.close(fd)
    partial = Path(name)
    try:
        outcome = train(
            {n: params[n] for n in numbers},
            splits,
            settings,
            study_seed=study.seed,
            keep=lambda model: model.save(partial),
            keep_number=record.number,
        )[numbers.index(record.number)]
        if isinstance(outcome, TrialError):
            raise outcome
        result = outcome
        partial.replace(out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return ExportReport(
        study=study.name,
        trial=record.number,
        params=record.params,
        out=out,
        recorded_test_accuracy=record.test_accuracy,
        exported_test_accuracy=result.test_accuracy,
        metric=metric,
        recorded=record.metric(metric),
        exported=result.metrics.get(metric),
    )


def format_export(result: ExportReport) -> str:
    tolerance = f"{TOLERANCE}" if result.metric == "test_accuracy" else f"{TOLERANCE:.0%}"
    verdict = (
        f"within the tolerance of {tolerance}"
        if result.within_tolerance
        else f"WARNING: beyond the tolerance of {tolerance}; the trial may not be "
        "reproducible on this machine (different CPU kernels or backend)"
    )
    return (
        f"wrote {result.out}: study {result.study} trial {result.trial}, "
        f"{result.metric} {fmt_value(result.exported)} "
        f"(recorded {fmt_value(result.recorded)}, {verdict}); "
        f"load it with keras.models.load_model({str(result.out)!r})"
    )
