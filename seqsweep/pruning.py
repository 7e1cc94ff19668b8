"""When a trial stops early (``--pruner``): pure rules on the values trials reached.

The worker asks these at each epoch end, with the values the results DB holds for
that epoch, so decisions hold across machines. Which trials get pruned depends on
the order in which trials reach an epoch: the rules only ever compare with the
trials that got there first.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from seqsweep.errors import UsageError
from seqsweep.settings import MEDIAN_MIN_TRIALS, StudySettings
from seqsweep.vocab import Direction, Objective, Pruner


def asha_rungs(min_epochs: int, eta: int, epochs: int) -> tuple[int, ...]:
    """ASHA's rungs before the last epoch: ``min_epochs * eta**k`` for k = 0, 1, ..."""
    rungs: list[int] = []
    rung = min_epochs
    while rung < epochs:
        rungs.append(rung)
        rung *= eta
    return tuple(rungs)


def decision_epochs(settings: StudySettings, epochs: int | None = None) -> tuple[int, ...]:
    """The epochs at whose end a trial of ``epochs`` (default: the study's) may be stopped.

    None at the last epoch: stopping there saves nothing. The median rule waits for
    ``min_epochs``, its warm-up.
    """
    total = settings.epochs if epochs is None else epochs
    if settings.pruner is Pruner.ASHA:
        return asha_rungs(settings.min_epochs, settings.reduction_factor, total)
    if settings.pruner is Pruner.MEDIAN:
        return tuple(range(settings.min_epochs, total))
    return ()


def check_prunable(settings: StudySettings, searched_epochs: int | None = None) -> None:
    """Refuse a pruner that could stop no trial before its last epoch.

    ``searched_epochs`` is the most epochs the search space gives a trial when it
    searches ``epochs`` (each trial then trains its own count); otherwise the study's
    ``--epochs`` holds for every trial.
    """
    if settings.pruner is Pruner.NONE:
        return
    most = settings.epochs if searched_epochs is None else searched_epochs
    if decision_epochs(settings, most):
        return
    if searched_epochs is None:
        which, fix = f"--epochs {most}", f"use --epochs above {settings.min_epochs}"
    else:
        which = f"the space's epochs (at most {most})"
        fix = f"let the space's epochs go above {settings.min_epochs}"
    raise UsageError(
        f"--pruner {settings.pruner}: nothing to prune with {which} and --min-epochs "
        f"{settings.min_epochs}: a trial could only be stopped at its last epoch; "
        f"{fix}, or --pruner none"
    )


def asha_continues(own: float, reached: Sequence[float], eta: int, objective: Objective) -> bool:
    """Whether a trial goes on past a rung: ``own`` is in the top 1/eta of ``reached``.

    ``reached`` holds the values of every trial that reached the rung so far, this one
    included. The top 1/eta is at least one trial, as in Optuna's successive halving:
    the first trials to reach a rung go on only if they lead it.
    """
    values = sorted(
        (v for v in reached if math.isfinite(v)),
        reverse=objective.direction is Direction.MAXIMIZE,
    )
    if not math.isfinite(own) or not values:
        return False
    keep = max(1, len(values) // eta)
    threshold = values[keep - 1]
    return not objective.better(threshold, own)


def median_continues(own: float, others: Sequence[float], objective: Objective) -> bool:
    """Whether a trial goes on: ``own`` is no worse than the median of ``others`` at this
    epoch, or fewer than ``MEDIAN_MIN_TRIALS`` others got there yet."""
    values = [v for v in others if math.isfinite(v)]
    if not math.isfinite(own):
        return False
    if len(values) < MEDIAN_MIN_TRIALS:
        return True
    return not objective.better(statistics.median(values), own)


def continues(
    settings: StudySettings,
    epoch: int,
    epochs: int,
    own: float,
    others: Sequence[float],
) -> bool:
    """Whether a trial of ``epochs`` epochs trains past ``epoch``, given its value ``own``
    there and the ``others``' values at the same epoch (every other trial that got there)."""
    if epoch not in decision_epochs(settings, epochs):
        return True
    if settings.pruner is Pruner.ASHA:
        return asha_continues(own, [*others, own], settings.reduction_factor, settings.ranking)
    return median_continues(own, others, settings.ranking)
