"""The reporter: the best trial, a top-k table and hyperparameter importance.

Rendered as text, CSV or one JSON object; :mod:`scheduler.html_report` draws the same
report as one HTML page.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from scheduler.importance import format_importance, hyperparameter_importance
from seqsweep.db import ResultStore, TrialRecord

_METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")


def study_report(store: ResultStore, study_name: str, top_k: int = 10) -> dict[str, Any]:
    """Return the report of ``study_name``; best means highest val_accuracy, then lowest val_loss.

    This dict is what ``report --format json`` prints.
    """
    study = store.require_study(study_name)
    counts = store.counts(study.id)
    top = [trial_summary(t) for t in store.top_trials(study.id, top_k)]
    importance = hyperparameter_importance(store.get_trials(study.id))
    return {
        "study": study.name,
        "status": study.status,
        "seed": study.seed,
        "counts": counts.as_dict(),
        "best": top[0] if top else None,
        "top": top,
        "importance": None if importance is None else importance.as_dict(),
    }


def trial_summary(trial: TrialRecord) -> dict[str, Any]:
    return {
        "number": trial.number,
        "params": trial.params,
        **{m: getattr(trial, m) for m in _METRICS},
        "duration_s": trial.duration_s,
        "device": trial.device,
    }


def format_report(report: dict[str, Any]) -> str:
    """Render a report as a plain-text table that ends with the best trial."""
    c = report["counts"]
    lines = [
        f"study {report['study']} ({report['status']}): {c['total']} trials, "
        f"{c['succeeded']} succeeded, {c['failed']} failed, {c['running']} running, "
        f"{c['queued']} queued" + (f", {c['cancelled']} cancelled" if c["cancelled"] else "")
    ]
    top = report["top"]
    if not top:
        lines.append("no trial has succeeded yet")
        return "\n".join(lines)
    names = list(top[0]["params"])
    header = ["rank", "trial", "val_acc", "val_loss", "test_acc", *names]
    rows = [
        [
            str(i + 1),
            str(t["number"]),
            fmt_value(t["val_accuracy"]),
            fmt_value(t["val_loss"]),
            fmt_value(t["test_accuracy"]),
            *(fmt_value(t["params"].get(n)) for n in names),
        ]
        for i, t in enumerate(top)
    ]
    lines.append("")
    lines.append(f"top {len(top)} by val_accuracy (ties: lower val_loss):")
    lines.append(format_table(header, rows, align_right=True))
    lines.append("")
    lines.append(format_importance(report["importance"]))
    best = report["best"]
    lines.append("")
    lines.append(
        f"best trial: #{best['number']}  val_accuracy={fmt_value(best['val_accuracy'])}  "
        f"val_loss={fmt_value(best['val_loss'])}  test_accuracy="
        f"{fmt_value(best['test_accuracy'])}  test_loss={fmt_value(best['test_loss'])}"
    )
    lines.append(
        "best params: " + "  ".join(f"{k}={fmt_value(v)}" for k, v in best["params"].items())
    )
    return "\n".join(lines)


def format_csv(report: dict[str, Any]) -> str:
    """The top-k table as CSV: one row per trial, full precision, one column per parameter."""
    top = report["top"]
    names = sorted({name for t in top for name in t["params"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "trial", *_METRICS, "duration_s", "device", *names])
    for rank, t in enumerate(top, start=1):
        writer.writerow(
            [
                rank,
                t["number"],
                *(t[m] for m in _METRICS),
                t["duration_s"],
                t["device"],
                *(t["params"].get(n) for n in names),
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


def fmt_value(value: Any) -> str:
    """A table cell: 4 decimals for ordinary floats, 3 significant digits otherwise."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"
    return str(value)
