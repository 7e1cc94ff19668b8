"""Samplers that fix every trial up front, and random sampling, the default.

``random``, ``sobol`` (``scheduler.sobol``) and ``grid`` (``scheduler.grid``) are
pure functions of (study seed, trial number), so ``launch`` samples and enqueues a
study's trials at once. Random sampling is a pure function of (study seed, trial number).

Conditional parameters (a layer past the trial's ``n_layers``; ``weight_decay``
without ``adamw``) are drawn like the others, then dropped, so whether one is
used never moves another's value.

Each parameter gets its own random stream, seeded by (seed, number, name), so
adding a parameter to a space leaves the values of the others unchanged, and
trial 57 is the same whether a study runs 60 or 100 trials.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from scheduler.space import Choice, Distribution, Fixed, IntRange, LogUniform, SearchSpace, Uniform
from seqsweep.seeds import MAX_SEED, param_rng
from seqsweep.structure import active_params
from seqsweep.vocab import Sampler


class PointSampler(Protocol):
    """Parameters of any trial of a study from its seed and number alone."""

    #: How many distinct trials it has (a grid's combinations); None: no end.
    size: int | None

    def sample(self, seed: int, number: int) -> dict[str, Any]: ...


class RandomSampler:
    """Independent draws (:func:`sample`)."""

    size: int | None = None

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def sample(self, seed: int, number: int) -> dict[str, Any]:
        return sample(self.space, seed, number)


def point_sampler(space: SearchSpace, name: Sampler | str) -> PointSampler:
    """The sampler ``--sampler NAME`` means for ``space``; a bad pairing is a UsageError."""
    from scheduler.grid import GridSampler
    from scheduler.sobol import SobolSampler

    kinds: dict[Sampler, type[Any]] = {
        Sampler.RANDOM: RandomSampler,
        Sampler.SOBOL: SobolSampler,
        Sampler.GRID: GridSampler,
    }
    return kinds[Sampler(name)](space)  # type: ignore[no-any-return]


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
