"""A study's trials as a pandas DataFrame, laid out as Optuna's ``Study.trials_dataframe``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from seqsweep.db import StudyRecord, TrialRecord

#: The final metrics, one column each, after ``value``.
METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")


def trials_dataframe(study: StudyRecord, trials: Sequence[TrialRecord]) -> pd.DataFrame:
    """One row per trial, by number; see :meth:`scheduler.api.Study.trials_dataframe`."""
    names = list(study.space)
    names += sorted({n for t in trials for n in t.params} - set(names))
    metric = study.objective.metric
    rows = [_row(t, names, metric) for t in trials]
    columns = [
        "number",
        "value",
        *METRICS,
        "datetime_start",
        "datetime_complete",
        "duration",
        "duration_s",
        *(f"params_{n}" for n in names),
        "state",
        "attempts",
        "worker",
        "device",
        "error",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("datetime_start", "datetime_complete"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["duration"] = frame["datetime_complete"] - frame["datetime_start"]
    return frame


def _row(trial: TrialRecord, names: list[str], metric: str) -> dict[str, Any]:
    metrics = {m: getattr(trial, m) for m in METRICS}
    return {
        "number": trial.number,
        "value": trial.metric(metric),
        **metrics,
        "datetime_start": trial.started_at,
        "datetime_complete": trial.finished_at,
        "duration_s": trial.duration_s,
        **{f"params_{n}": trial.params.get(n) for n in names},
        "state": str(trial.status),
        "attempts": trial.attempts,
        "worker": trial.worker,
        "device": trial.device,
        "error": trial.error,
    }
