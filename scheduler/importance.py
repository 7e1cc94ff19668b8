"""Hyperparameter importance: permutation importance of a random-forest surrogate.

A scikit-learn ``RandomForestRegressor`` learns val_accuracy from the hyperparameters of
the succeeded trials. On folds the forest was not fitted on, each hyperparameter's column
is shuffled and the drop in the forest's R² is that parameter's importance
(permutation importance, averaged over K folds). Held-out folds
keep a forest that memorised its trials from making every parameter look important.

A conditional parameter (``dense_units3``, absent from two-layer trials) is shuffled
only among the trials that have it: shuffling its presence would credit it with what
``n_layers`` does.

Shares are the drops clipped at zero and scaled to sum to 1. The surrogate's own
cross-validated R² comes with them: near or below zero, val accuracy is mostly noise
with respect to these parameters (or there are too few trials), and so is the ranking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from seqsweep.db import TrialRecord
from seqsweep.vocab import OBJECTIVE, TrialStatus

METHOD = "permutation importance of a random-forest surrogate (scikit-learn), on held-out folds"
#: Fewer trials than this give a ranking that is mostly noise; report none.
MIN_TRIALS = 8
#: Below this cross-validated R², the surrogate barely predicts: the ranking is noise.
NOISE_R2 = 0.1
#: A random subset of this many trials bounds the time on very large studies.
MAX_TRIALS = 1000
#: Bumped when the computation changes, so that cached rankings of the old one go stale.
REVISION = 2
_FOLDS = 5
#: Per-tree overhead is most of a ranking's time; the shares' spread over seeds was the
#: same at 32 trees as at 64 (it comes from the folds), so 32.
_TREES = 32
_REPEATS = 5


@dataclass(frozen=True)
class ParamImportance:
    name: str
    share: float  # of the total importance, 0..1
    r2_drop: float  # mean drop of the surrogate's held-out R² when this column is shuffled


@dataclass(frozen=True)
class Importance:
    method: str
    trials: int  # trials the surrogate learned from
    folds: int
    surrogate_r2: float  # cross-validated R² of the forest itself
    params: tuple[ParamImportance, ...]  # most important first
    constant: tuple[str, ...]  # parameters with one value in every trial: nothing to rank
    metric: str = OBJECTIVE.metric  # what the surrogate predicts: the study's objective

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hyperparameter_importance(
    trials: Sequence[TrialRecord], metric: str = OBJECTIVE.metric, seed: int = 0
) -> Importance | None:
    """Rank the hyperparameters of the succeeded ``trials`` by their effect on ``metric``
    (the study's objective).

    Returns ``None`` when fewer than :data:`MIN_TRIALS` trials succeeded.
    """
    values = {t.number: t.metric(metric) for t in trials}
    done = [
        t
        for t in trials
        if t.status == TrialStatus.SUCCEEDED
        and (v := values[t.number]) is not None
        and math.isfinite(v)
    ]
    if len(done) < MIN_TRIALS:
        return None
    rng = np.random.default_rng(seed)
    if len(done) > MAX_TRIALS:
        done = [done[i] for i in sorted(rng.choice(len(done), MAX_TRIALS, replace=False))]
    names = sorted({name for t in done for name in t.params})
    columns = {name: _encode([t.params.get(name) for t in done]) for name in names}
    present = {name: np.array([name in t.params for t in done]) for name in names}
    varying = [n for n in names if len(np.unique(columns[n])) > 1]
    constant = tuple(n for n in names if n not in varying)
    y = np.array([values[t.number] for t in done], dtype=float)
    if not varying:
        return Importance(METHOD, len(done), 0, 0.0, (), constant, metric)
    x = np.column_stack([columns[n] for n in varying])
    folds = min(_FOLDS, len(done) // 4)
    mask = np.column_stack([present[n] for n in varying])
    drops, r2 = _held_out_drops(x, y, folds, seed, mask)
    positive = np.clip(drops, 0.0, None)
    total = float(positive.sum())
    shares = positive / total if total > 0 else np.zeros_like(positive)
    ranked = sorted(
        (
            ParamImportance(n, float(s), float(d))
            for n, s, d in zip(varying, shares, drops, strict=True)
        ),
        key=lambda p: (-p.share, -p.r2_drop, p.name),
    )
    return Importance(METHOD, len(done), folds, r2, tuple(ranked), constant, metric)


def _held_out_drops(
    x: np.ndarray, y: np.ndarray, folds: int, seed: int, present: np.ndarray
) -> tuple[np.ndarray, float]:
    """Mean permutation drop per column, and the forest's R², over ``folds`` held-out folds.

    Each fold's shuffled copies (every column, :data:`_REPEATS` times) go to the forest
    in one ``predict``: scikit-learn's ``permutation_importance`` predicts them one copy
    at a time, and that per-call cost was most of a ranking's time.
    """
    # scikit-learn costs seconds to import (it imports scipy and pandas): only rankings pay.
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.model_selection import KFold

    rng = np.random.default_rng(seed)
    drops = np.zeros(x.shape[1])
    predicted = np.empty_like(y)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
        forest = RandomForestRegressor(n_estimators=_TREES, random_state=seed, n_jobs=1)
        forest.fit(x[train], y[train])
        held, truth = x[test], y[test]
        copies = [held]
        for j in range(x.shape[1]):
            rows = np.flatnonzero(present[test, j])  # a conditional one: shuffled where present
            for _ in range(_REPEATS):
                shuffled = held.copy()
                shuffled[rows, j] = held[rng.permutation(rows), j]
                copies.append(shuffled)
        predictions = forest.predict(np.concatenate(copies)).reshape(len(copies), -1)
        predicted[test] = predictions[0]  # the unshuffled fold
        scores = _r2(truth, predictions)
        drops += (scores[0] - scores[1:].reshape(x.shape[1], _REPEATS).mean(axis=1)) / folds
    return drops, float(_r2(y, predicted[None])[0])


def _r2(truth: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """R² of each row of ``predictions`` against ``truth`` (1 - residual / total sum of squares)."""
    total = float(((truth - truth.mean()) ** 2).sum())
    residual = ((predictions - truth) ** 2).sum(axis=1)
    if total == 0.0:  # a constant target: perfect or not at all, as scikit-learn's r2_score
        return np.where(residual == 0.0, 1.0, 0.0)
    return 1.0 - residual / total


def _encode(values: list[Any]) -> np.ndarray:
    """Numbers stay numbers (trees only need their order); anything else gets its rank.

    A conditional parameter is absent (None) from trials that do not use it, such as
    ``dense_units3`` of a two-layer trial: absent gets a value of its own below every
    real one, so the trees split it off instead of reading it as a small number, and
    the numbers keep their order.
    """
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        low, high = float(min(present)), float(max(present))
        absent = low - (high - low) - 1.0
        return np.array([absent if v is None else v for v in values], dtype=float)
    order = {v: i for i, v in enumerate(sorted({str(v) for v in present}))}
    return np.array([-1 if v is None else order[str(v)] for v in values], dtype=float)


def format_importance(importance: Importance | None, min_trials: int = MIN_TRIALS) -> str:
    """Plain-text ranking with the method and how far the surrogate can be trusted."""
    if importance is None:
        return f"hyperparameter importance: needs at least {min_trials} succeeded trials"
    lines = [
        f"hyperparameter importance ({importance.method}; {importance.trials} trials, "
        f"{importance.folds} folds, surrogate R² {importance.surrogate_r2:.2f}):"
    ]
    width = max((len(p.name) for p in importance.params), default=0)
    for p in importance.params:
        bar = "#" * round(20 * p.share)
        lines.append(f"  {p.name.ljust(width)}  {p.share:6.1%}  {bar}")
    if importance.constant:
        lines.append(f"  fixed in every trial: {', '.join(importance.constant)}")
    if importance.surrogate_r2 < NOISE_R2:
        lines.append(
            f"  the surrogate barely predicts {importance.metric} (R² < 0.1): "
            "read this ranking as noise, or run more trials"
        )
    return "\n".join(lines)
