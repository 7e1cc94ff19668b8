"""The figures of the HTML report, one function each; ``None`` when there is nothing to draw.

Every axis that shows a hyperparameter follows its distribution in the search space
(:func:`axis_kind`): a choice (such as ``dense_units``, a choice of widths) is a
categorical axis, a log-uniform parameter a log axis, anything else a linear one.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from scheduler.importance import Importance
from scheduler.report import fmt_value
from scheduler.space import Choice, Distribution, Fixed, IntRange, LogUniform, SearchSpace
from seqsweep.db import EpochRecord, TrialRecord
from seqsweep.vocab import OBJECTIVE, Objective, TrialStatus

_COLS = 4  # subplots per row in the per-parameter grid
_GRID = 60  # contour resolution per axis
_PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a")
#: The timeline's colour of each state a trial with a worker can be in.
_STATE_COLOURS = {
    TrialStatus.SUCCEEDED: "#00cc96",
    TrialStatus.PRUNED: "#ffa15a",
    TrialStatus.FAILED: "#ef553b",
    TrialStatus.RUNNING: "#636efa",
    TrialStatus.CANCELLED: "#b6b6b6",
    TrialStatus.QUEUED: "#b6b6b6",
}
#: A legend above the plot, left-aligned: one at the right is cut off by narrow pages.
_LEGEND_ABOVE = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0}
#: Log-axis ticks as 0.0001, not plotly's SI "100µ".
_PLAIN_NUMBERS = {"exponentformat": "none"}


class Axis(StrEnum):
    LINEAR = "linear"
    LOG = "log"
    CATEGORY = "category"


def axis_kind(dist: Distribution) -> Axis:
    """How an axis shows a parameter: choices are categories, log-scale samples a log axis."""
    if isinstance(dist, Choice | Fixed):
        return Axis.CATEGORY
    if isinstance(dist, LogUniform) or (isinstance(dist, IntRange) and dist.log):
        return Axis.LOG
    return Axis.LINEAR


def _categories(dist: Distribution) -> list[Any]:
    return list(dist.values) if isinstance(dist, Choice) else list(dist.bounds())


def _axis_layout(name: str, dist: Distribution) -> dict[str, Any]:
    kind = axis_kind(dist)
    if kind is Axis.CATEGORY:
        labels = [str(v) for v in _categories(dist)]
        return {"type": "category", "categoryorder": "array", "categoryarray": labels}
    if kind is Axis.LOG:
        return {"type": "log", "title_text": f"{name} (log)", **_PLAIN_NUMBERS}
    return {"type": "linear"}


def _shown(value: Any, dist: Distribution) -> Any:
    """A parameter's value as its axis plots it: categories by their label; absent stays
    None (a conditional parameter the trial does not use), which plotly leaves out."""
    if value is None:
        return None
    return str(value) if axis_kind(dist) is Axis.CATEGORY else value


def history(done: list[TrialRecord], objective: Objective = OBJECTIVE) -> go.Figure | None:
    if not done:
        return None
    numbers = [t.number for t in done]
    values = [_value(t, objective) for t in done]
    running: list[float] = []
    for value in values:
        running.append(
            value if not running or objective.better(value, running[-1]) else running[-1]
        )
    fig = go.Figure()
    fig.add_scatter(x=numbers, y=values, mode="markers", name="trial", text=hover(done))
    fig.add_scatter(x=numbers, y=running, mode="lines", line_shape="hv", name="best so far")
    fig.update_layout(
        xaxis_title="trial number", yaxis_title=_title(objective), legend=_LEGEND_ABOVE
    )
    return fig


def edf(done: list[TrialRecord], objective: Objective = OBJECTIVE) -> go.Figure | None:
    """The empirical distribution of the objective: the share of trials at or below x."""
    if not done:
        return None
    values = sorted(_value(t, objective) for t in done)
    shares = [(i + 1) / len(values) for i in range(len(values))]
    fig = go.Figure(
        go.Scatter(x=values, y=shares, mode="lines+markers", line_shape="hv", marker={"size": 4})
    )
    fig.update_layout(
        xaxis_title=_title(objective),
        yaxis_title="share of succeeded trials at or below",
        yaxis_tickformat=".0%",
        yaxis_range=[0, 1.02],
        height=360,
    )
    return fig


def params(
    done: list[TrialRecord], space: SearchSpace, names: list[str], objective: Objective = OBJECTIVE
) -> go.Figure | None:
    if not done or not names:
        return None
    rows = math.ceil(len(names) / _COLS)
    fig = make_subplots(rows=rows, cols=min(_COLS, len(names)), subplot_titles=names)
    for i, name in enumerate(names):
        row, col = divmod(i, _COLS)
        dist = space.params[name]
        fig.add_scatter(
            x=[_shown(t.params.get(name), dist) for t in done],
            y=[_value(t, objective) for t in done],
            mode="markers",
            marker={"color": _PALETTE[0]},
            text=hover(done),
            showlegend=False,
            row=row + 1,
            col=col + 1,
        )
        fig.update_xaxes(row=row + 1, col=col + 1, **_axis_layout(name, dist))
        fig.update_yaxes(
            title_text=_title(objective) if col == 0 else None, row=row + 1, col=col + 1
        )
    fig.update_layout(height=320 * rows)
    return fig


def contour(
    done: list[TrialRecord],
    space: SearchSpace,
    pair: Sequence[str],
    objective: Objective = OBJECTIVE,
) -> go.Figure | None:
    """The objective over two parameters: linear interpolation between the trials (a
    smooth extension outside their hull), with the trials on top."""
    if len(done) < 3 or len(pair) < 2:
        return None
    (xn, xd), (yn, yd) = ((n, space.params[n]) for n in pair[:2])
    xs = np.array([_coordinate(t.params.get(xn), xd) for t in done])
    ys = np.array([_coordinate(t.params.get(yn), yd) for t in done])
    zs = np.array([_value(t, objective) for t in done])
    fig = go.Figure()
    surface = _interpolate(xs, ys, zs)
    if surface is not None:
        gx, gy, gz = surface
        fig.add_contour(
            x=_from_coordinate(gx, xd),
            y=_from_coordinate(gy, yd),
            z=gz,
            colorscale="Viridis",
            connectgaps=False,
            colorbar={"title": {"text": _title(objective)}},
            hoverinfo="skip",
        )
    fig.add_scatter(
        x=_from_coordinate(xs, xd),
        y=_from_coordinate(ys, yd),
        mode="markers",
        marker={"color": "white", "size": 7, "line": {"color": "#222", "width": 1}},
        text=hover(done),
        showlegend=False,
    )
    fig.update_xaxes(title_text=xn, **_contour_axis(xd))
    fig.update_yaxes(title_text=yn, **_contour_axis(yd))
    fig.update_layout(height=480)
    return fig


def _coordinate(value: Any, dist: Distribution) -> float:
    """Where a value sits on a contour axis: log10 on a log axis, its index for a choice."""
    kind = axis_kind(dist)
    if value is None:  # absent: a conditional parameter this trial does not use
        return math.nan
    if kind is Axis.CATEGORY:
        labels = [str(v) for v in _categories(dist)]
        return float(labels.index(str(value))) if str(value) in labels else math.nan
    return math.log10(value) if kind is Axis.LOG else float(value)


def _from_coordinate(coords: np.ndarray, dist: Distribution) -> list[float]:
    """Back to what the axis is labelled in (plotly draws log axes from the data values)."""
    return [10**c for c in coords] if axis_kind(dist) is Axis.LOG else list(coords)


def _contour_axis(dist: Distribution) -> dict[str, Any]:
    kind = axis_kind(dist)
    if kind is Axis.CATEGORY:
        labels = [str(v) for v in _categories(dist)]
        return {"tickvals": list(range(len(labels))), "ticktext": labels}
    return {"type": "log", **_PLAIN_NUMBERS} if kind is Axis.LOG else {}


def _interpolate(
    xs: np.ndarray, ys: np.ndarray, zs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``z`` on a grid spanning the trials; None when they do not span an area."""
    from scipy.interpolate import griddata
    from scipy.spatial import QhullError

    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys, zs = xs[keep], ys[keep], zs[keep]
    if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return None
    gx = np.linspace(xs.min(), xs.max(), _GRID)
    gy = np.linspace(ys.min(), ys.max(), _GRID)
    # Interpolate on axes scaled to [0, 1], so neither parameter's units dominate.
    sx, sy = np.ptp(xs), np.ptp(ys)
    mesh_x, mesh_y = np.meshgrid((gx - xs.min()) / sx, (gy - ys.min()) / sy)
    points = ((xs - xs.min()) / sx, (ys - ys.min()) / sy)
    try:
        gz = griddata(points, zs, (mesh_x, mesh_y))
    except (QhullError, ValueError):  # the trials lie on a line
        return None
    return gx, gy, _extend(gz)


def _extend(grid: np.ndarray, sweeps: int = 400) -> np.ndarray:
    """Fill the cells outside the trials' hull (NaN) smoothly from its edge.

    Each blank cell becomes the mean of its neighbours, repeatedly: a discrete harmonic
    extension, as Optuna's contour fills its grid, instead of a ragged blank border.
    """
    blank = np.isnan(grid)
    if not blank.any():
        return grid
    filled = np.where(blank, np.nanmean(grid), grid)
    for _ in range(sweeps):
        padded = np.pad(filled, 1, mode="edge")
        mean = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) / 4
        filled = np.where(blank, mean, grid)
    return filled


def curves(
    trials: list[tuple[int, list[EpochRecord]]],
    count: int,
    pruned: list[tuple[int, list[EpochRecord]]] | None = None,
) -> go.Figure | None:
    """Per-epoch val loss and val accuracy of the top ``count`` trials, and of the
    ``pruned`` trials in grey, each marked with an x where its pruner stopped it."""
    stopped = [(n, epochs) for n, epochs in pruned or [] if epochs]
    if not any(epochs for _, epochs in trials) and not stopped:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("val loss", "val accuracy"))
    for rank, (number, epochs) in enumerate(trials[:count]):
        style = {"color": _PALETTE[rank % len(_PALETTE)]}
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
    for col, metric in ((1, "val_loss"), (2, "val_accuracy")):
        if stopped:
            _add_pruned(fig, stopped, metric, col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    return fig


def _add_pruned(
    fig: go.Figure, stopped: list[tuple[int, list[EpochRecord]]], metric: str, col: int
) -> None:
    """One grey trace for all pruned trials' curves (gaps between them), one of x marks."""
    x: list[int | None] = []
    y: list[float | None] = []
    for _, epochs in stopped:
        x += [e.epoch for e in epochs] + [None]
        y += [getattr(e, metric) for e in epochs] + [None]
    grey = {"color": "#b6b6b6", "width": 1}
    fig.add_scatter(x=x, y=y, mode="lines", name="pruned trials", legendgroup="pruned",
                    showlegend=col == 1, line=grey, hoverinfo="skip", row=1, col=col)  # fmt: skip
    fig.add_scatter(
        x=[epochs[-1].epoch for _, epochs in stopped],
        y=[getattr(epochs[-1], metric) for _, epochs in stopped],
        mode="markers",
        name="stopped here",
        legendgroup="pruned",
        showlegend=col == 1,
        marker={"symbol": "x", "color": "#ffa15a", "size": 8},
        text=[f"trial {n} pruned after epoch {epochs[-1].epoch}" for n, epochs in stopped],
        hoverinfo="text",
        row=1,
        col=col,
    )


def parallel(
    done: list[TrialRecord], space: SearchSpace, names: list[str], objective: Objective = OBJECTIVE
) -> go.Figure | None:
    if not done:
        return None
    dims = []
    for name in names:
        dist = space.params[name]
        values = [t.params.get(name) for t in done]
        kind = axis_kind(dist)
        if kind is Axis.CATEGORY:  # one tick per choice, evenly spaced
            labels = [str(v) for v in _categories(dist)]
            codes = [labels.index(str(v)) if str(v) in labels else None for v in values]
            ticks = {"tickvals": list(range(len(labels))), "ticktext": labels}
            dims.append({"label": name, "values": codes, **ticks})
        elif kind is Axis.LOG:
            logs = [None if v is None else math.log10(v) for v in values]
            dims.append({"label": f"log10({name})", "values": logs})
        else:
            dims.append({"label": name, "values": values})
    values = [_value(t, objective) for t in done]
    dims.append({"label": _title(objective), "values": values})
    line = {"color": values, "colorscale": "Viridis", "showscale": True}
    return go.Figure(go.Parcoords(line=line, dimensions=dims))


def importance(ranking: Importance | None) -> go.Figure | None:
    if ranking is None or not ranking.params:
        return None
    ranked = list(reversed(ranking.params))  # plotly draws bars bottom-up
    fig = go.Figure(
        go.Bar(x=[p.share for p in ranked], y=[p.name for p in ranked], orientation="h")
    )
    fig.update_layout(xaxis_title="share of importance", xaxis_tickformat=".0%", height=300)
    fig.update_yaxes(automargin=True)
    return fig


def timeline(trials: list[TrialRecord], now: datetime) -> go.Figure | None:
    """One row per worker process, one bar per trial from its start to its end (or now),
    coloured by state: idle workers show as gaps. A trial appears on the worker of its
    latest attempt; the members of a pack share one bar's span."""
    placed = [t for t in trials if t.worker is not None and t.started_at is not None]
    if not placed:
        return None
    workers = sorted({t.worker for t in placed if t.worker is not None})
    fig = go.Figure()
    for state, colour in _STATE_COLOURS.items():
        group = [t for t in placed if t.status == state]
        if not group:
            continue
        starts = [t.started_at for t in group if t.started_at is not None]
        ends = [t.finished_at or now for t in group]
        fig.add_bar(
            base=[s.isoformat() for s in starts],
            x=[max((e - s).total_seconds() * 1000, 1.0) for s, e in zip(starts, ends, strict=True)],
            y=[t.worker for t in group],
            orientation="h",
            name=str(state),
            marker={"color": colour},
            text=[f"trial {t.number}" for t in group],
            textposition="none",
            hovertemplate="%{text}<br>%{base|%H:%M:%S} + %{x:,.0f} ms<extra>%{y}</extra>",
        )
    fig.update_xaxes(type="date", title_text="time (UTC)")
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=workers, automargin=True)
    fig.update_layout(
        barmode="overlay",
        height=140 + 28 * len(workers),
        legend=_LEGEND_ABOVE,
        showlegend=True,  # the colours' key, even when every trial is in one state
        bargap=0.3,
    )
    return fig


def hover(done: list[TrialRecord]) -> list[str]:
    return [
        f"trial {t.number}<br>"
        + "<br>".join(f"{html.escape(k)}={html.escape(fmt_value(v))}" for k, v in t.params.items())
        for t in done
    ]


def _title(objective: Objective) -> str:
    return objective.metric.replace("_", " ")


def _value(trial: TrialRecord, objective: Objective = OBJECTIVE) -> float:
    value = trial.metric(objective.metric)
    return float(value)
