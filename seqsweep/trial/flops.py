"""What a trial costs in floating-point operations, from its params.

The count is the dense matmuls of a built-in network, per sample: a layer of
``fan_in`` inputs and ``fan_out`` units costs ``2 * fan_in * fan_out`` forward (a
multiply and an add per weight); training costs three times that (the backward pass
computes the gradients of the inputs and of the weights, each a matmul of the
forward's size). So, for ``E`` epochs on ``n_train``, ``n_val`` and ``n_test`` rows,
with ``F`` the forward FLOPs of one sample::

    flops = E * (3 * F * n_train + F * n_val) + F * n_test

Biases, activations, dropout, batch norm and the optimizer are linear in the units,
not their square, and left out: the count is a lower bound of the work done, so a
FLOP rate made from it is a lower bound too.

The same formula and names as ``seqsweep.trial.cost`` of the cost-aware packing work
(branch i12-cost), written here because that had not landed: one of the two goes when
both have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from seqsweep.dataset import Splits
from seqsweep.settings import StudySettings
from seqsweep.structure import Structure


@dataclass(frozen=True)
class DataShape:
    """What a trial's cost depends on in its study's data: widths and split rows."""

    n_features: int
    n_outputs: int
    n_train: int
    n_val: int
    n_test: int

    @classmethod
    def of_splits(cls, splits: Splits) -> DataShape:
        return cls(
            splits.x_train.shape[1],
            splits.n_outputs,
            len(splits.x_train),
            len(splits.x_val),
            len(splits.x_test),
        )


def forward_flops(units: Sequence[int], n_features: int, n_outputs: int) -> int:
    """Dense matmul FLOPs of one sample through hidden layers ``units`` and the head."""
    widths = [n_features, *units, n_outputs]
    return sum(2 * a * b for a, b in pairwise(widths))


def trial_flops(params: Mapping[str, Any], settings: StudySettings, data: DataShape) -> int:
    """Training and evaluation FLOPs of one trial of a built-in network (formula above)."""
    units = Structure.from_params(params).units
    epochs = int(params.get("epochs", settings.epochs))
    forward = forward_flops(units, data.n_features, data.n_outputs)
    return epochs * (3 * forward * data.n_train + forward * data.n_val) + forward * data.n_test
