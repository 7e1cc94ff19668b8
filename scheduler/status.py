"""Study management: ``status`` of every study or of one, and ``cancel``.

Each function returns a frozen report whose ``as_dict()`` is what ``--format json``
prints; the ``format_*`` functions render the same reports as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.report import fmt_value, format_table
from seqsweep.db import ResultStore, StudySummary, TrialRecord, WorkerCounts
from seqsweep.db.records import COUNTS_ORDER
from seqsweep.vocab import OBJECTIVE


@dataclass(frozen=True)
class StudyDetail:
    """One study in detail: its summary, trials per worker process, its latest failures."""

    summary: StudySummary
    max_attempts: int
    workers: tuple[WorkerCounts, ...]
    last_failures: tuple[TrialRecord, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.summary.as_dict(),
            "max_attempts": self.max_attempts,
            "workers": [w.as_dict() for w in self.workers],
            "last_failures": [
                {
                    "number": t.number,
                    "worker": t.worker,
                    "finished_at": None if t.finished_at is None else t.finished_at.isoformat(),
                    "error": t.error,
                }
                for t in self.last_failures
            ],
        }


@dataclass(frozen=True)
class StudiesOverview:
    """Every study, oldest first."""

    studies: tuple[StudySummary, ...]

    def as_dict(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.studies]


@dataclass(frozen=True)
class CancelReport:
    """What ``cancel`` did: queued trials dropped, running ones left to finish."""

    study: str
    cancelled: tuple[int, ...]
    running: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "cancelled": list(self.cancelled),
            "running": list(self.running),
        }


def studies_status(store: ResultStore) -> StudiesOverview:
    """Every study, oldest first: name, created, status, counts per state, best so far."""
    return StudiesOverview(tuple(store.study_summaries()))


#: Failed trials that ``status STUDY`` lists, newest first.
LAST_FAILURES = 5


def study_status(store: ResultStore, name: str, failures: int = LAST_FAILURES) -> StudyDetail:
    """One study in detail: its summary, counts per worker, and its latest failures."""
    study = store.require_study(name)
    (summary,) = store.study_summaries(study.id)
    return StudyDetail(
        summary=summary,
        max_attempts=study.max_attempts,
        workers=tuple(store.worker_counts(study.id)),
        last_failures=tuple(store.last_failures(study.id, failures)),
    )


def cancel_study(store: ResultStore, name: str) -> CancelReport:
    """Cancel study ``name``: queued trials will not run, running ones may finish."""
    study = store.require_study(name)
    done = store.cancel(study.id)
    return CancelReport(study=study.name, cancelled=done.cancelled, running=done.running)


def format_studies(overview: StudiesOverview) -> str:
    if not overview.studies:
        return "no studies yet; start one with python -m scheduler launch"
    default = all(s.objective == OBJECTIVE for s in overview.studies)
    best = "best val_acc" if default else "best (objective)"
    header = ["study", "created", "status", "total", *COUNTS_ORDER, best, "best trial"]
    table = [
        [
            s.name,
            _timestamp(s),
            s.status,
            str(s.counts.total),
            *(str(s.counts.of(state)) for state in COUNTS_ORDER),
            _best(s),
            fmt_value(s.best_number),
        ]
        for s in overview.studies
    ]
    return format_table(header, table)


def format_study(detail: StudyDetail) -> str:
    s = detail.summary
    c = s.counts
    lines = [
        f"study {s.name} ({s.status}), created {_timestamp(s)} UTC",
        f"trials: {c.total} total, "
        + ", ".join(f"{c.of(state)} {state}" for state in COUNTS_ORDER)
        + f"; max attempts {detail.max_attempts}",
        f"best so far: {s.objective.metric} {fmt_value(s.best_value)} "
        f"(trial {fmt_value(s.best_number)})",
        "",
    ]
    if detail.workers:
        lines.append("per worker:")
        rows = [
            [w.worker, str(w.succeeded), str(w.pruned), str(w.failed), str(w.running)]
            for w in detail.workers
        ]
        header = ["worker", "succeeded", "pruned", "failed", "running"]
        lines.append(format_table(header, rows, indent="  "))
    else:
        lines.append("no worker has taken a trial yet")
    if detail.last_failures:
        lines.append("")
        lines.append(f"last {len(detail.last_failures)} failure(s), newest first:")
        lines.extend(
            f"  trial {t.number} on {t.worker or '-'}: {t.error}" for t in detail.last_failures
        )
    return "\n".join(lines)


def format_cancel(result: CancelReport) -> str:
    running = result.running
    return (
        f"study {result.study} cancelled: {len(result.cancelled)} queued trial(s) "
        f"will not run; {len(running)} running trial(s) may finish"
        + (f" ({', '.join(map(str, running))})" if running else "")
    )


def _best(summary: StudySummary) -> str:
    """The best value so far; named when the study optimizes something else than val_acc."""
    value = fmt_value(summary.best_value)
    if summary.objective == OBJECTIVE or summary.best_value is None:
        return value
    return f"{value} ({summary.objective.metric})"


def _timestamp(summary: StudySummary) -> str:
    """Creation time as stored, in UTC, to the second: ``2026-11-28 16:21:16``."""
    return summary.created_at.strftime("%Y-%m-%d %H:%M:%S")
