"""Grid sampling: every combination of a space of choices, shuffled by the study seed.

A grid is enumerated without being built: for each combination of the parameters
that decide which others a trial uses (``n_layers``, ``optimizer``), a block of the
product of the parameters it uses, indexed in mixed radix. So conditional parameters
make no duplicate trials: a one-layer network is not repeated for every unit count
of a second layer it does not have. Trial *n* is combination ``order[n]`` of a
permutation drawn from the study seed, so any prefix of the trials is a random
subset of the grid, and trial *n* does not depend on ``--trials``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from scheduler.space import Choice, Fixed, IntRange, SearchSpace
from seqsweep.errors import UsageError
from seqsweep.seeds import grid_rng
from seqsweep.structure import CONDITIONS, active_params

#: Most combinations a grid may have: its shuffle holds one integer per combination.
MAX_GRID = 10_000_000


@dataclass(frozen=True)
class _Block:
    """The combinations sharing the values of the deciding parameters."""

    fixed: dict[str, Any]
    names: tuple[str, ...]
    size: int


class GridSampler:
    """The grid of one space; refuses a space with a continuous parameter."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._levels = {name: _levels(name, dist) for name, dist in space.params.items()}
        deciding = [n for n in CONDITIONS if n in self._levels]
        self._blocks: list[_Block] = []
        for values in itertools.product(*(self._levels[n] for n in deciding)):
            fixed = dict(zip(deciding, values, strict=True))
            probe = {name: fixed.get(name) for name in space.params}
            names = tuple(n for n in active_params(probe) if n not in fixed)
            size = math.prod(len(self._levels[n]) for n in names)
            self._blocks.append(_Block(fixed, names, size))
        #: How many distinct trials the grid holds.
        self.size = sum(b.size for b in self._blocks)
        if self.size > MAX_GRID:
            raise UsageError(
                f"--sampler grid: the space has {self.size} combinations, more than "
                f"{MAX_GRID}; list fewer values, or use --sampler sobol"
            )
        self._orders: dict[int, np.ndarray] = {}

    def sample(self, seed: int, number: int) -> dict[str, Any]:
        """Return the parameters of trial ``number`` (below :attr:`size`) of a study."""
        if not 0 <= number < self.size:
            raise ValueError(f"number must be in [0, {self.size}), got {number}")
        order = self._orders.get(seed)
        if order is None:
            order = self._orders[seed] = grid_rng(seed).permutation(self.size)
        return self.combination(int(order[number]))

    def combination(self, index: int) -> dict[str, Any]:
        """Combination ``index`` of the grid in its unshuffled order."""
        for block in self._blocks:
            if index < block.size:
                chosen = dict(block.fixed)
                for name in reversed(block.names):  # the last name varies fastest
                    index, digit = divmod(index, len(self._levels[name]))
                    chosen[name] = self._levels[name][digit]
                return {n: chosen[n] for n in self.space.params if n in chosen}
            index -= block.size
        raise ValueError(f"index past the grid's {self.size} combinations")


def _levels(name: str, dist: object) -> tuple[Any, ...] | range:
    if isinstance(dist, Fixed):
        return (dist.value,)
    if isinstance(dist, Choice):
        return dist.values
    if isinstance(dist, IntRange):
        return range(dist.low, dist.high + 1, 1 if dist.log else dist.step)
    bounds = ", ".join(map(str, dist.bounds()))  # type: ignore[attr-defined]
    raise UsageError(
        f"--sampler grid: {name} is continuous ({dist.kind} in [{bounds}]); "  # type: ignore[attr-defined]
        f"make it {{type: choice, values: [...]}}, or use --sampler sobol or random"
    )
