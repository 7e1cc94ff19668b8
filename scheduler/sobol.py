"""Sobol sampling: scrambled quasi-random points, a pure function of (study seed, trial number).

Trial *n* takes the *n*-th point of the study's scrambled Sobol sequence (scipy's
``qmc.Sobol``, scrambled by a stream of the study seed), one dimension per searched
parameter in the space's order. Any prefix of the sequence covers the space more
evenly than as many independent draws; the values of trial *n* do not depend on how
many trials the study has. Conditional parameters get a dimension like the others and
are dropped when a trial does not use them, as with random sampling.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy.stats import qmc  # type: ignore[import-untyped]

from scheduler.space import Choice, Distribution, Fixed, IntRange, LogUniform, SearchSpace, Uniform
from seqsweep.seeds import sobol_rng
from seqsweep.structure import active_params


class SobolSampler:
    """The points of one space; keeps each seed's sequence once generated."""

    #: A Sobol sequence has no end.
    size: int | None = None

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._searched = [n for n, d in space.params.items() if not isinstance(d, Fixed)]
        self._points: dict[int, np.ndarray] = {}

    def sample(self, seed: int, number: int) -> dict[str, Any]:
        """Return the parameters of trial ``number`` of a study seeded with ``seed``."""
        if number < 0:
            raise ValueError(f"number must be non-negative, got {number}")
        point = self._point(seed, number)
        drawn = {
            name: dist.value if isinstance(dist, Fixed) else from_unit(dist, float(point[name]))
            for name, dist in self.space.params.items()
        }
        return active_params(drawn)

    def _point(self, seed: int, number: int) -> dict[str, float]:
        if not self._searched:
            return {}
        points = self._points.get(seed)
        if points is None or len(points) <= number:
            # The sequence's prefix does not depend on its length: regenerate it longer.
            m = max(4, math.ceil(math.log2(number + 1)))
            points = _engine(len(self._searched), seed).random_base2(m)
            self._points[seed] = points
        return dict(zip(self._searched, points[number], strict=True))


def _engine(dims: int, seed: int) -> qmc.Sobol:
    rng = sobol_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return qmc.Sobol(dims, scramble=True, rng=rng)
        except TypeError:  # scipy < 1.15 names it seed
            return qmc.Sobol(dims, scramble=True, seed=rng)


def from_unit(dist: Distribution, u: float) -> Any:
    """The value of ``dist`` at quantile ``u`` in [0, 1)."""
    if isinstance(dist, Choice):
        return dist.values[min(int(u * len(dist.values)), len(dist.values) - 1)]
    if isinstance(dist, LogUniform):
        return float(math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low))))
    if isinstance(dist, Uniform):
        return float(dist.low + u * (dist.high - dist.low))
    if isinstance(dist, IntRange):
        if dist.log:
            low, high = math.log(dist.low), math.log(dist.high + 1)
            return min(int(math.exp(low + u * (high - low))), dist.high)
        n_steps = (dist.high - dist.low) // dist.step
        return dist.low + dist.step * min(int(u * (n_steps + 1)), n_steps)
    raise TypeError(f"unknown distribution {dist!r}")
