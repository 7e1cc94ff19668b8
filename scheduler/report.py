"""The reporter: the best trial and a top-k table, as text or as one JSON object."""

from __future__ import annotations

import math
from typing import Any

from seqsweep.db import ResultStore, TrialRecord

_METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")


def study_report(store: ResultStore, study_name: str, top_k: int = 10) -> dict[str, Any]:
    """Return the report of ``study_name``; best means highest val_accuracy, then lowest val_loss.

    This dict is what ``report --format json`` prints.
    """
    study = store.require_study(study_name)
    counts = store.counts(study.id)
    top = [trial_summary(t) for t in store.top_trials(study.id, top_k)]
    return {
        "study": study.name,
        "status": study.status,
        "seed": study.seed,
        "counts": counts.as_dict(),
        "best": top[0] if top else None,
        "top": top,
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
        f"{c['queued']} queued"
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
            _fmt(t["val_accuracy"]),
            _fmt(t["val_loss"]),
            _fmt(t["test_accuracy"]),
            *(_fmt(t["params"].get(n)) for n in names),
        ]
        for i, t in enumerate(top)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append("")
    lines.append(f"top {len(top)} by val_accuracy (ties: lower val_loss):")
    for row in [header, *rows]:
        lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    best = report["best"]
    lines.append("")
    lines.append(
        f"best trial: #{best['number']}  val_accuracy={_fmt(best['val_accuracy'])}  "
        f"val_loss={_fmt(best['val_loss'])}  test_accuracy="
        f"{_fmt(best['test_accuracy'])}  test_loss={_fmt(best['test_loss'])}"
    )
    lines.append("best params: " + "  ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items()))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"
    return str(value)
