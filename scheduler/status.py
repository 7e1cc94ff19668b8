"""Study management: ``status`` of every study or of one, and ``cancel``.

Each function returns a plain dict (what ``--format json`` prints); the
``format_*`` functions render the same dicts as text.
"""

from __future__ import annotations

from typing import Any

from scheduler.report import fmt_value, format_table
from seqsweep.db import ResultStore, StudySummary

_STATES = ("succeeded", "failed", "running", "queued", "cancelled")


def studies_status(store: ResultStore) -> list[dict[str, Any]]:
    """Every study, oldest first: name, created, status, counts per state, best so far."""
    return [_summary(s) for s in store.study_summaries()]


def study_status(store: ResultStore, name: str, failures: int = 5) -> dict[str, Any]:
    """One study in detail: its summary, counts per worker, and its latest failures."""
    study = store.require_study(name)
    (summary,) = store.study_summaries(study.id)
    return {
        **_summary(summary),
        "max_attempts": study.max_attempts,
        "workers": [
            {"worker": w.worker, "succeeded": w.succeeded, "failed": w.failed, "running": w.running}
            for w in store.worker_counts(study.id)
        ],
        "last_failures": [
            {
                "number": t.number,
                "worker": t.worker,
                "finished_at": None if t.finished_at is None else t.finished_at.isoformat(),
                "error": t.error,
            }
            for t in store.last_failures(study.id, failures)
        ],
    }


def cancel_study(store: ResultStore, name: str) -> dict[str, Any]:
    """Cancel study ``name``: queued trials will not run, running ones may finish."""
    study = store.require_study(name)
    done = store.cancel(study.id)
    return {"study": study.name, "cancelled": list(done.cancelled), "running": list(done.running)}


def format_studies(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no studies yet; start one with python -m scheduler launch"
    header = ["study", "created", "status", "total", *_STATES, "best val_acc", "best trial"]
    table = [
        [
            r["study"],
            _timestamp(r["created_at"]),
            r["status"],
            str(r["counts"]["total"]),
            *(str(r["counts"][s]) for s in _STATES),
            fmt_value(r["best_val_accuracy"]),
            fmt_value(r["best_trial"]),
        ]
        for r in rows
    ]
    return format_table(header, table)


def format_study(detail: dict[str, Any]) -> str:
    c = detail["counts"]
    lines = [
        f"study {detail['study']} ({detail['status']}), created "
        f"{_timestamp(detail['created_at'])} UTC",
        f"trials: {c['total']} total, "
        + ", ".join(f"{c[s]} {s}" for s in _STATES)
        + f"; max attempts {detail['max_attempts']}",
        f"best so far: val_accuracy {fmt_value(detail['best_val_accuracy'])} "
        f"(trial {fmt_value(detail['best_trial'])})",
        "",
    ]
    workers = detail["workers"]
    if workers:
        lines.append("per worker:")
        rows = [
            [w["worker"], str(w["succeeded"]), str(w["failed"]), str(w["running"])] for w in workers
        ]
        lines.append(format_table(["worker", "succeeded", "failed", "running"], rows, indent="  "))
    else:
        lines.append("no worker has taken a trial yet")
    failures = detail["last_failures"]
    if failures:
        lines.append("")
        lines.append(f"last {len(failures)} failure(s), newest first:")
        lines.extend(
            f"  trial {f['number']} on {f['worker'] or '-'}: {f['error']}" for f in failures
        )
    return "\n".join(lines)


def format_cancel(result: dict[str, Any]) -> str:
    running = result["running"]
    return (
        f"study {result['study']} cancelled: {len(result['cancelled'])} queued trial(s) "
        f"will not run; {len(running)} running trial(s) may finish"
        + (f" ({', '.join(map(str, running))})" if running else "")
    )


def _summary(s: StudySummary) -> dict[str, Any]:
    return {
        "study": s.name,
        "created_at": s.created_at.isoformat(),
        "status": s.status,
        "counts": s.counts.as_dict(),
        "best_trial": s.best_number,
        "best_val_accuracy": s.best_val_accuracy,
    }


def _timestamp(iso: str) -> str:
    """``2026-11-28T16:21:16.84+00:00`` -> ``2026-11-28 16:21:16`` (UTC, as stored)."""
    return iso[:19].replace("T", " ")
