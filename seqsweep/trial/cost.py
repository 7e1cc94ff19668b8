"""What a trial costs in floating-point operations, and the packs and order that follow.

The scheduler sends the heaviest trials first and the worker caps what one pack may
take (:func:`pack_positions`), so that the heaviest shape of a study is shared by
every worker instead of keeping one core busy while the others idle.

The count (:func:`trial_flops`) is the dense matmuls of a built-in network, per sample:
a layer of ``fan_in`` inputs and ``fan_out`` units costs ``2 * fan_in * fan_out``
forward (a multiply and an add per weight); training costs three times that (the
backward pass computes the gradients of the inputs and of the weights, each a matmul
of the forward's size). So, for ``E`` epochs on ``n_train``, ``n_val`` and ``n_test``
rows, with ``F`` the forward FLOPs of one sample::

    flops = E * (3 * F * n_train + F * n_val) + F * n_test

Biases, activations, dropout, batch norm and the optimizer are linear in the units,
not their square, and left out: the count is a lower bound of the work done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from seqsweep.dataset import Splits, split_sizes
from seqsweep.settings import PACK_SHARE_OF_QUEUE, PACK_UNSPLIT_FLOPS, StudySettings
from seqsweep.structure import Structure
from seqsweep.trial.packed import pack_shape


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

    @classmethod
    def of_rows(
        cls, n_features: int, n_outputs: int, n_rows: int, settings: StudySettings
    ) -> DataShape:
        """The shape of a dataset of ``n_rows`` once the study splits it."""
        n_train, n_val, n_test = split_sizes(n_rows, settings.val_fraction, settings.test_fraction)
        return cls(n_features, n_outputs, n_train, n_val, n_test)


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


def heaviest_first(
    trials: Mapping[int, Mapping[str, Any]], settings: StudySettings, data: DataShape
) -> list[int]:
    """Trial numbers by cost, heaviest first; equal costs keep their number order.

    Workers take messages in the order they were sent, and each lead brings queued
    partners of its shape, so the first messages decide which packs start first.
    """
    cost = {n: trial_flops(p, settings, data) for n, p in trials.items()}
    return sorted(trials, key=lambda n: (-cost[n], n))


def pack_budget(queued_flops: int, lead_flops: int) -> int:
    """The most FLOPs one pack may take while ``queued_flops`` of work (lead included)
    is queued: a share of the queue, so that other workers get some of the heavy shape,
    never less than the lead itself nor than a pack too small to be worth splitting."""
    return max(lead_flops, PACK_UNSPLIT_FLOPS, queued_flops // PACK_SHARE_OF_QUEUE)


def pack_positions(
    lead: Mapping[str, Any],
    queued: Sequence[Mapping[str, Any]],
    settings: StudySettings,
    data: DataShape,
    limit: int,
) -> list[int]:
    """Positions in ``queued`` (params of the study's queued trials, in number order,
    the lead not among them) of the partners that train in ``lead``'s pack.

    The first of the lead's shape, at most ``limit``, while the pack's total stays
    within :func:`pack_budget`.
    """
    shape = pack_shape(dict(lead), settings)
    costs = [trial_flops(p, settings, data) for p in queued]
    taken = trial_flops(lead, settings, data)
    budget = pack_budget(taken + sum(costs), taken)
    out: list[int] = []
    for i, params in enumerate(queued):
        if len(out) >= limit:
            break
        if pack_shape(dict(params), settings) != shape:
            continue
        if taken + costs[i] > budget:
            break  # members of one shape cost the same: no later one fits either
        out.append(i)
        taken += costs[i]
    return out
