"""The reporter: the best trial, a top-k table and hyperparameter importance.

Rendered as text, CSV or one JSON object; :mod:`scheduler.html_report` draws the same
report as one HTML page.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from scheduler.importance import Importance, format_importance
from scheduler.importance_cache import cached_importance
from seqsweep.db import Counts, ResultStore, TrialRecord
from seqsweep.settings import StudySettings
from seqsweep.structure import Structure
from seqsweep.vocab import (
    DEFAULT_SAMPLER,
    OBJECTIVE,
    Objective,
    Pruner,
    Sampler,
    StudyStatus,
    Task,
)

_METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")
#: Rows of the top-k table that ``report`` shows unless told otherwise.
REPORT_TOP = 10


@dataclass(frozen=True)
class TrialSummary:
    """One row of a report: a succeeded trial, its parameters and its final metrics."""

    number: int
    params: dict[str, Any]
    val_accuracy: float | None
    val_loss: float | None
    test_accuracy: float | None
    test_loss: float | None
    duration_s: float | None
    device: str | None
    #: Every recorded final metric by name (val_mae, test_rmse, val_auc, ...).
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, trial: TrialRecord) -> TrialSummary:
        stored = trial.metrics or {
            m: v for m in _METRICS if (v := cast(float | None, getattr(trial, m))) is not None
        }
        return cls(
            number=trial.number,
            params=dict(trial.params),
            val_accuracy=trial.val_accuracy,
            val_loss=trial.val_loss,
            test_accuracy=trial.test_accuracy,
            test_loss=trial.test_loss,
            duration_s=trial.duration_s,
            device=trial.device,
            metrics=dict(stored),
        )

    def metric(self, name: str) -> float | None:
        """A final metric by name (``val_accuracy``, ``val_loss``, ``val_mae``, ...)."""
        if name in self.metrics:
            return self.metrics[name]
        return cast(float | None, getattr(self, name)) if name in _METRICS else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "params": self.params,
            **{m: self.metric(m) for m in _METRICS},
            "duration_s": self.duration_s,
            "device": self.device,
        }


@dataclass(frozen=True)
class StudyReport:
    """A study's state, its best trials (best first) and the hyperparameter importance."""

    study: str
    status: StudyStatus
    seed: int
    counts: Counts
    top: tuple[TrialSummary, ...]
    importance: Importance | None
    objective: Objective = OBJECTIVE
    task: Task = Task.CLASSIFICATION
    #: ``module:function`` of the user's build function (``--model``); None: built in.
    model: str | None = None
    #: How the study's trials were picked (``--sampler``).
    sampler: Sampler = DEFAULT_SAMPLER
    #: What stopped bad trials early (``--pruner``), with its reduction factor and
    #: first epoch, as stored; and the epochs trained over all trials.
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": str(Pruner.NONE)})
    epochs_trained: int = 0

    @property
    def best(self) -> TrialSummary | None:
        return self.top[0] if self.top else None

    def as_dict(self) -> dict[str, Any]:
        """What ``report --format json`` prints: ``best`` also names the objective and
        holds every final metric."""
        top = [t.as_dict() for t in self.top]
        best = self.best
        return {
            "study": self.study,
            "status": str(self.status),
            "seed": self.seed,
            "sampler": str(self.sampler),
            "pruner": self.pruner,
            "counts": self.counts.as_dict(),
            "epochs_trained": self.epochs_trained,
            "best": None
            if best is None
            else {
                **top[0],
                "objective": self.objective.as_dict(best.metric(self.objective.metric)),
                "metrics": best.metrics,
            },
            "top": top,
            "importance": None if self.importance is None else self.importance.as_dict(),
        }


def study_report(
    store: ResultStore, study_name: str, top_k: int = REPORT_TOP, *, importance: bool = True
) -> StudyReport:
    """The report of ``study_name``; its ``top`` is ranked by :func:`seqsweep.db.sql.best_first`.

    ``importance=False`` leaves the ranking out (None), for output that does not show it;
    otherwise it comes from :mod:`scheduler.importance_cache`.
    """
    study = store.require_study(study_name)
    settings = StudySettings.from_dict(study.settings)
    ranking = None
    if importance:
        ranking = cached_importance(store, study.id, settings.objective)
    return StudyReport(
        study=study.name,
        status=study.status,
        seed=study.seed,
        counts=store.counts(study.id),
        top=tuple(TrialSummary.of(t) for t in store.top_trials(study.id, top_k)),
        importance=ranking,
        objective=settings.ranking,
        task=settings.task,
        model=settings.model,
        sampler=settings.sampler,
        pruner=_pruner(settings),
        epochs_trained=store.epochs_trained(study.id),
    )


def _pruner(settings: StudySettings) -> dict[str, Any]:
    if settings.pruner is Pruner.NONE:
        return {"name": str(Pruner.NONE)}
    return {
        "name": str(settings.pruner),
        "reduction_factor": settings.reduction_factor,
        "min_epochs": settings.min_epochs,
    }


def format_report(report: StudyReport) -> str:
    """Render a report as a plain-text table that ends with the best trial."""
    c = report.counts
    lines = [
        f"study {report.study} ({report.status}): {c.total} trials, "
        f"{c.succeeded} succeeded, "
        + (f"{c.pruned} pruned, " if c.pruned else "")
        + f"{c.failed} failed, {c.running} running, "
        f"{c.queued} queued" + (f", {c.cancelled} cancelled" if c.cancelled else "")
    ]
    best = report.best
    if best is None:
        lines.append("no trial has succeeded yet")
        return "\n".join(lines)
    names = param_names(report.top)
    columns = _table_metrics(report)
    header = ["rank", "trial", *(short for _, short in columns), *names]
    rows = [
        [
            str(i + 1),
            str(t.number),
            *(fmt_value(t.metric(m)) for m, _ in columns),
            *(fmt_value(t.params.get(n)) for n in names),
        ]
        for i, t in enumerate(report.top)
    ]
    objective = report.objective
    how = "" if objective == OBJECTIVE else f"{objective.direction}d, "
    ties = "earlier trial" if objective.metric == "val_loss" else "lower val_loss"
    lines.append("")
    lines.append(f"top {len(report.top)} by {objective.metric} ({how}ties: {ties}):")
    lines.append(format_table(header, rows, align_right=True))
    lines.append("")
    lines.append(format_importance(report.importance))
    lines.append("")
    shown = _BEST_LINE[report.task]
    if objective.metric not in shown:
        shown = (objective.metric, *shown)
    lines.append(
        f"best trial: #{best.number}  "
        + "  ".join(f"{m}={fmt_value(best.metric(m))}" for m in shown)
    )
    lines.append("best params: " + "  ".join(f"{k}={fmt_value(v)}" for k, v in best.params.items()))
    if report.model is not None:
        lines.append(f"built by: {report.model}")
    elif set(best.params) - _ARTICLE_PARAMS:
        lines.append(f"best structure: {Structure.from_params(best.params).describe()}")
    return "\n".join(lines)


def format_csv(report: StudyReport) -> str:
    """The top-k table as CSV: one row per trial, full precision, one column per parameter
    (empty where a trial does not use a conditional parameter)."""
    names = sorted({name for t in report.top for name in t.params})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    extra = sorted({m for t in report.top for m in t.metrics} - set(_METRICS))
    writer.writerow(["rank", "trial", *_METRICS, *extra, "duration_s", "device", *names])
    for rank, t in enumerate(report.top, start=1):
        writer.writerow(
            [
                rank,
                t.number,
                *(t.metric(m) for m in _METRICS),
                *(t.metric(m) for m in extra),
                t.duration_s,
                t.device,
                *(t.params.get(n) for n in names),
            ]
        )
    return out.getvalue()


def format_table(
    header: list[str], rows: list[list[str]], *, align_right: bool = False, indent: str = ""
) -> str:
    """Columns two spaces apart, each as wide as its widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    pad = str.rjust if align_right else str.ljust
    return "\n".join(
        indent + "  ".join(pad(cell, w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


#: Metric columns of the text table (name, header) and the best trial's line, per task.
_TABLE_METRICS = {
    Task.CLASSIFICATION: (("val_accuracy", "val_acc"), ("val_loss", "val_loss"),
                          ("test_accuracy", "test_acc")),
    Task.REGRESSION: (("val_loss", "val_mse"), ("val_mae", "val_mae"), ("val_rmse", "val_rmse"),
                      ("test_rmse", "test_rmse")),
}  # fmt: skip
_BEST_LINE = {
    Task.CLASSIFICATION: ("val_accuracy", "val_loss", "test_accuracy", "test_loss"),
    Task.REGRESSION: ("val_loss", "val_mae", "val_rmse", "test_loss", "test_mae", "test_rmse"),
}
#: The article's parameters: a study that searches only these needs no structure line.
_ARTICLE_PARAMS = {"dense_units", "dropout_rate1", "dropout_rate2", "learning_rate", "epochs",
                   "batch_size"}  # fmt: skip


def _table_metrics(report: StudyReport) -> tuple[tuple[str, str], ...]:
    columns = _TABLE_METRICS[report.task]
    if all(m != report.objective.metric for m, _ in columns):
        columns = ((report.objective.metric, report.objective.metric), *columns)
    return columns


def param_names(trials: Sequence[TrialSummary]) -> list[str]:
    """Every parameter of ``trials``, in first-seen order: a conditional one (``dense_units3``)
    is absent from the trials that do not use it, so no single trial names them all."""
    return list(dict.fromkeys(name for t in trials for name in t.params))


def fmt_value(value: Any) -> str:
    """A table cell: 4 decimals for ordinary floats, 3 significant digits otherwise."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"
    return str(value)
