"""Random sampling: a pure function of (study seed, trial number).

Conditional parameters (a layer past the trial's ``n_layers``; ``weight_decay``
without ``adamw``) are drawn like the others, then dropped, so whether one is
used never moves another's value.

Each parameter gets its own random stream, seeded by (seed, number, name), so
adding a parameter to a space leaves the values of the others unchanged, and
trial 57 is the same whether a study runs 60 or 100 trials.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scheduler.space import Choice, Distribution, Fixed, IntRange, LogUniform, SearchSpace, Uniform
from seqsweep.seeds import MAX_SEED, param_rng
from seqsweep.structure import active_params


def sample(space: SearchSpace, seed: int, number: int) -> dict[str, Any]:
    """Return the parameters of trial ``number`` of a study seeded with ``seed``."""
    if not 0 <= seed <= MAX_SEED or number < 0:
        raise ValueError(f"seed and number must be non-negative, got {seed}, {number}")
    drawn = {
        name: _draw(dist, param_rng(seed, number, name)) for name, dist in space.params.items()
    }
    return active_params(drawn)


def _draw(dist: Distribution, rng: np.random.Generator) -> Any:
    if isinstance(dist, Fixed):
        return dist.value
    if isinstance(dist, Choice):
        return dist.values[int(rng.integers(len(dist.values)))]
    if isinstance(dist, LogUniform):
        return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
    if isinstance(dist, Uniform):
        return float(rng.uniform(dist.low, dist.high))
    if isinstance(dist, IntRange):
        if dist.log:
            value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high + 1)))
            return min(int(value), dist.high)
        n_steps = (dist.high - dist.low) // dist.step
        return dist.low + dist.step * int(rng.integers(n_steps + 1))
    raise TypeError(f"unknown distribution {dist!r}")
