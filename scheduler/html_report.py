"""``report --html``: one self-contained HTML page of a study, with interactive plots.

The page inlines plotly.js once, so it opens offline and from a mail attachment alike:
no CDN, no server. It holds the best configuration, the figures of
:mod:`scheduler.plots` (history, EDF, each hyperparameter, a contour of two, parallel
coordinates, learning curves, importance, the worker timeline) and the top-k table.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from scheduler import plots
from scheduler.importance import METHOD, Importance
from scheduler.report import StudyReport, TrialSummary, fmt_value, param_names
from scheduler.space import SearchSpace
from seqsweep.db import ResultStore
from seqsweep.db.records import COUNTS_ORDER
from seqsweep.files import check_writable_target, write_private
from seqsweep.vocab import Direction, TrialStatus

#: Trials whose learning curves are drawn.
CURVES = 5


def write_html_report(store: ResultStore, report: StudyReport, path: Path) -> Path:
    """Write the page for ``report`` (from :func:`scheduler.report.study_report`) to ``path``."""
    check_writable_target(path, "--html")
    # Written aside under a fresh name and renamed: a failed write leaves no half page,
    # and a symlink planted in a shared folder is replaced, never followed.
    return write_private(path, html_report(store, report).encode("utf-8"), "--html")


def html_report(store: ResultStore, report: StudyReport) -> str:
    """The page for ``report``; reads every trial and the top trials' epochs from ``store``."""
    study = store.require_study(report.study)
    space = SearchSpace.from_dict(study.space, custom=study.settings.get("model") is not None)
    trials = store.get_trials(study.id)
    done = [
        t
        for t in trials
        if t.status == TrialStatus.SUCCEEDED and _finite(t.metric(report.objective.metric))
    ]
    names = [n for n in space.params if len({repr(t.params.get(n)) for t in done}) > 1]
    pair = _contour_pair(names, report.importance)
    curves = [(t.number, store.epochs(t.id)) for t in store.top_trials(study.id, CURVES)]
    pruned = [t for t in trials if t.status == TrialStatus.PRUNED]
    pruned_epochs = store.epochs_of([t.id for t in pruned])
    stopped = [(t.number, pruned_epochs.get(t.id, [])) for t in pruned]
    goal = report.objective
    objective = goal.metric.replace("_", " ")
    figures: list[tuple[str, str, go.Figure | None]] = [
        ("history", "Optimization history", plots.history(done, goal)),
        ("edf", f"Empirical distribution of {objective}", plots.edf(done, goal)),
        (
            "params",
            f"{objective.capitalize()} against each hyperparameter",
            plots.params(done, space, names, goal),
        ),
        (
            "contour",
            f"{objective.capitalize()} over {' and '.join(pair) or 'two hyperparameters'}",
            plots.contour(done, space, pair, goal),
        ),
        ("parallel", "Parallel coordinates", plots.parallel(done, space, names, goal)),
        (
            "curves",
            f"Learning curves of the top {CURVES} trials"
            + (", and where each pruned trial stopped" if stopped else ""),
            plots.curves(curves, CURVES, stopped),
        ),
        ("importance", "Hyperparameter importance", plots.importance(report.importance)),
        ("timeline", "Worker timeline", plots.timeline(trials, datetime.now(UTC))),
    ]
    notes = {
        "importance": _importance_note(report.importance),
        "contour": _note(
            "The two most important hyperparameters (the first two that vary, until "
            "importance is known), interpolated linearly between the trials (white dots); "
            "beyond the outermost trials, smoothly extended from them."
        ),
        "edf": _note(f"The share of succeeded trials whose {objective} is at most x."),
        "timeline": _note(
            "One row per worker process, one bar per trial from its start to its end; "
            "gaps are idle time. A trial shows on the worker of its latest attempt."
        ),
    }
    sections = [_section(i, title, fig, notes.get(i, "")) for i, title, fig in figures]
    title = f"seqsweep report: {report.study}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style>",
            f'<script type="text/javascript">{get_plotlyjs()}</script>',
            "</head><body>",
            f"<h1>{_e(title)}</h1>",
            _summary(report, study.created_at),
            _best(report.best),
            *sections,
            _top_table(report.top),
            "</body></html>",
        ]
    )


def _contour_pair(names: list[str], importance: Importance | None) -> list[str]:
    """The two most important of the parameters that vary, else the first two."""
    if importance is not None:
        ranked = [p.name for p in importance.params if p.name in names]
        return (ranked + [n for n in names if n not in ranked])[:2]
    return names[:2]


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _section(div_id: str, title: str, fig: go.Figure | None, note: str = "") -> str:
    if fig is None:
        body = '<p class="empty">Not enough succeeded trials to draw this yet.</p>'
    else:
        fig.update_layout(template="plotly_white", margin={"t": 40, "b": 40})
        body = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
        )
    return f"<section><h2>{_e(title)}</h2>{note}{body}</section>"


def _summary(report: StudyReport, created: datetime) -> str:
    c = report.counts
    states = ", ".join(f"{c.of(state)} {state}" for state in COUNTS_ORDER if c.of(state))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<p>Status <b>{_e(report.status)}</b>; {c.total} trials ({_e(states)}); "
        f"study seed {report.seed}; created {created:%Y-%m-%d %H:%M}. "
        f"Best means {_e(_best_means(report))}. Written {stamp}.</p>"
    )


def _best_means(report: StudyReport) -> str:
    how = "highest" if report.objective.direction is Direction.MAXIMIZE else "lowest"
    # Ties go to the lower val loss, which for a val-loss objective is the earlier trial.
    ties = "earlier trial" if report.objective.metric == "val_loss" else "lowest val loss"
    return f"{how} {report.objective.metric.replace('_', ' ')}, then the {ties}"


def _best(best: TrialSummary | None) -> str:
    if best is None:
        return "<section><h2>Best configuration</h2><p>No trial has succeeded yet.</p></section>"
    rows = [(k, v) for k, v in best.params.items()] + list(best.metrics.items())
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(fmt_value(v))}</td></tr>" for k, v in rows)
    return (
        f"<section><h2>Best configuration: trial {best.number}</h2>"
        f'<table id="best">{cells}</table></section>'
    )


def _importance_note(importance: Importance | None) -> str:
    if importance is None:
        return ""
    return (
        f'<p class="note">Method: {_e(METHOD)}. {importance.trials} trials, '
        f"{importance.folds} folds; the surrogate's cross-validated R² is "
        f"{importance.surrogate_r2:.2f} (near 0: read the ranking as noise).</p>"
    )


def _top_table(top: tuple[TrialSummary, ...]) -> str:
    if not top:
        return ""
    names = param_names(top)
    metrics = list(dict.fromkeys(m for t in top for m in t.metrics))
    head = ["rank", "trial", *(m.replace("_", " ") for m in metrics), *names, "seconds"]
    rows = [
        [i + 1, t.number, *(t.metric(m) for m in metrics)]
        + [t.params.get(n) for n in names]
        + [t.duration_s]
        for i, t in enumerate(top)
    ]
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(fmt_value(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return (
        f"<section><h2>Top {len(top)} trials</h2>"
        f'<table id="top"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></section>'
    )


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _e(value: Any) -> str:
    return html.escape(str(value))


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.75rem; text-align: right; }
#best th { text-align: left; }
.note, .empty { color: #555; }
"""
