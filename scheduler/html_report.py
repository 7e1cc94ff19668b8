"""``report --html``: one self-contained HTML page of a study, with interactive plots.

The page inlines plotly.js once, so it opens offline and from a mail attachment alike:
no CDN, no server. It holds the optimization history with the running best, val
accuracy against each hyperparameter (log axes where the space samples on a log scale),
the learning curves of the top 5 trials, a parallel-coordinates view, the importance
ranking, the top-k table and the best configuration.
"""

from __future__ import annotations

import html
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from scheduler.importance import METHOD, Importance
from scheduler.report import StudyReport, TrialSummary, fmt_value
from seqsweep.db import ResultStore, TrialRecord
from seqsweep.db.records import COUNTS_ORDER
from seqsweep.errors import UsageError
from seqsweep.vocab import TrialStatus

#: Trials whose learning curves are drawn.
CURVES = 5
_COLS = 4  # subplots per row in the per-parameter grid


def write_html_report(store: ResultStore, report: StudyReport, path: Path) -> Path:
    """Write the page for ``report`` (from :func:`scheduler.report.study_report`) to ``path``."""
    if not path.parent.is_dir():
        raise UsageError(f"--html {path}: folder {path.parent} does not exist; create it first")
    page = html_report(store, report)
    # Written aside and renamed, so a failed write never leaves half a page behind.
    part = path.with_name(f".{path.name}.part")
    try:
        part.write_text(page, encoding="utf-8")
        os.replace(part, path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise UsageError(
            f"--html {path}: cannot write the report ({exc.strerror}); "
            "pick a file in a folder you can write to"
        ) from None
    return path


def html_report(store: ResultStore, report: StudyReport) -> str:
    """The page for ``report``; reads every trial and the top trials' epochs from ``store``."""
    study = store.require_study(report.study)
    trials = store.get_trials(study.id)
    done = [t for t in trials if t.status == TrialStatus.SUCCEEDED and _finite(t.val_accuracy)]
    log_params = {
        name
        for name, spec in study.space.items()
        if spec.get("type") == "loguniform" or (spec.get("type") == "int" and spec.get("log"))
    }
    names = [n for n in study.space if len({repr(t.params.get(n)) for t in done}) > 1]
    curves = [(t.number, store.epochs(t.id)) for t in store.top_trials(study.id, CURVES)]
    figures: list[tuple[str, str, go.Figure | None]] = [
        ("history", "Optimization history", _history(done)),
        ("params", "Val accuracy against each hyperparameter", _params(done, names, log_params)),
        ("curves", f"Learning curves of the top {CURVES} trials", _curves(curves)),
        ("parallel", "Parallel coordinates", _parallel(done, names, log_params)),
        ("importance", "Hyperparameter importance", _importance(report.importance)),
    ]
    notes = {"importance": _importance_note(report.importance)}
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


def _history(done: list[TrialRecord]) -> go.Figure | None:
    if not done:
        return None
    numbers = [t.number for t in done]
    accs = [t.val_accuracy for t in done]
    best, running = -math.inf, []
    for acc in accs:
        best = max(best, acc)  # type: ignore[type-var]
        running.append(best)
    fig = go.Figure()
    fig.add_scatter(x=numbers, y=accs, mode="markers", name="trial", text=_hover(done))
    fig.add_scatter(x=numbers, y=running, mode="lines", line_shape="hv", name="best so far")
    fig.update_layout(xaxis_title="trial number", yaxis_title="val accuracy")
    return fig


def _params(done: list[TrialRecord], names: list[str], log_params: set[str]) -> go.Figure | None:
    if not done or not names:
        return None
    rows = math.ceil(len(names) / _COLS)
    fig = make_subplots(rows=rows, cols=min(_COLS, len(names)), subplot_titles=names)
    for i, name in enumerate(names):
        row, col = divmod(i, _COLS)
        fig.add_scatter(
            x=[t.params.get(name) for t in done],
            y=[t.val_accuracy for t in done],
            mode="markers",
            marker={"color": "#636efa"},
            text=_hover(done),
            showlegend=False,
            row=row + 1,
            col=col + 1,
        )
        axis = {"type": "log", "title_text": f"{name} (log)"} if name in log_params else {}
        fig.update_xaxes(row=row + 1, col=col + 1, **axis)
        fig.update_yaxes(title_text="val accuracy" if col == 0 else None, row=row + 1, col=col + 1)
    fig.update_layout(height=320 * rows)
    return fig


def _curves(curves: list[tuple[int, list[Any]]]) -> go.Figure | None:
    if not any(epochs for _, epochs in curves):
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("val loss", "val accuracy"))
    palette = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a")
    for rank, (number, epochs) in enumerate(curves):
        style = {"color": palette[rank % len(palette)]}
        x = [e.epoch for e in epochs]
        for col, metric in ((1, "val_loss"), (2, "val_accuracy")):
            fig.add_scatter(
                x=x,
                y=[getattr(e, metric) for e in epochs],
                mode="lines+markers",
                name=f"#{rank + 1}: trial {number}",
                legendgroup=str(number),
                showlegend=col == 1,
                line=style,
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="epoch", dtick=1)
    return fig


def _parallel(done: list[TrialRecord], names: list[str], log_params: set[str]) -> go.Figure | None:
    if not done:
        return None
    dims = []
    for name in names:
        values = [t.params.get(name) for t in done]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            if name in log_params:
                dims.append({"label": f"log10({name})", "values": [math.log10(v) for v in values]})
            else:
                dims.append({"label": name, "values": values})
        else:  # text choices: one tick per value
            levels = sorted({str(v) for v in values})
            ticks = {"tickvals": list(range(len(levels))), "ticktext": levels}
            codes = [levels.index(str(v)) for v in values]
            dims.append({"label": name, "values": codes, **ticks})
    accs = [t.val_accuracy for t in done]
    dims.append({"label": "val accuracy", "values": accs})
    line = {"color": accs, "colorscale": "Viridis", "showscale": True}
    return go.Figure(go.Parcoords(line=line, dimensions=dims))


def _importance(importance: Importance | None) -> go.Figure | None:
    if importance is None or not importance.params:
        return None
    ranked = list(reversed(importance.params))  # plotly draws bars bottom-up
    fig = go.Figure(
        go.Bar(x=[p.share for p in ranked], y=[p.name for p in ranked], orientation="h")
    )
    fig.update_layout(xaxis_title="share of importance", xaxis_tickformat=".0%", height=300)
    fig.update_yaxes(automargin=True)
    return fig


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
        f"Best means highest val accuracy, then lowest val loss. Written {stamp}.</p>"
    )


def _best(best: TrialSummary | None) -> str:
    if best is None:
        return "<section><h2>Best configuration</h2><p>No trial has succeeded yet.</p></section>"
    rows = [(k, v) for k, v in best.params.items()] + [
        (m, best.metric(m)) for m in ("val_accuracy", "val_loss", "test_accuracy", "test_loss")
    ]
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
    names = list(top[0].params)
    head = ["rank", "trial", "val accuracy", "val loss", "test accuracy", *names, "seconds"]
    rows = [
        [i + 1, t.number, t.val_accuracy, t.val_loss, t.test_accuracy]
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


def _hover(done: list[TrialRecord]) -> list[str]:
    return [
        f"trial {t.number}<br>"
        + "<br>".join(f"{html.escape(k)}={html.escape(fmt_value(v))}" for k, v in t.params.items())
        for t in done
    ]


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
