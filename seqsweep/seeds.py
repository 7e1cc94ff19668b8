"""Every random stream of a study, derived from its one stored seed.

A study is reproducible because each stream is a pure function of the study seed
and a fixed key: which trial, which parameter, which purpose. Keeping them in one
module keeps the keys distinct: two streams that shared a key would be correlated.
"""

from __future__ import annotations

import secrets
import zlib

import numpy as np

#: Largest study seed: numpy's SeedSequence takes any non-negative int, the DB a BIGINT.
MAX_SEED = 2**63 - 1
#: Key of the split's stream, beside the study seed.
_SPLIT_KEY = 0x5EED
#: Key of the packs' batch order; above every 32-bit trial number.
_ORDER_KEY = 2**32
#: Keys of the Sobol scrambling and of the grid's shuffle; above every trial number too.
_SOBOL_KEY = 2**32 + 1
_GRID_KEY = 2**32 + 2
_ADAPTIVE_KEY = 2**32 + 3


def fresh_study_seed() -> int:
    """A random seed for a study launched without ``--seed``; short enough to type back."""
    return secrets.randbelow(2**31)


def param_rng(study_seed: int, number: int, name: str) -> np.random.Generator:
    """Stream of parameter ``name`` of trial ``number``: adding a parameter moves no other."""
    return np.random.default_rng([study_seed, number, zlib.crc32(name.encode())])


def sobol_rng(study_seed: int) -> np.random.Generator:
    """Stream that scrambles a study's Sobol sequence (``--sampler sobol``)."""
    return np.random.default_rng([study_seed, _SOBOL_KEY])


def grid_rng(study_seed: int) -> np.random.Generator:
    """Stream that shuffles a study's grid (``--sampler grid``)."""
    return np.random.default_rng([study_seed, _GRID_KEY])


def adaptive_seed(study_seed: int, number: int) -> int:
    """Seed of the adaptive sampler that picks trial ``number``: with the same finished
    trials in the DB, it picks the same parameters."""
    return int(np.random.SeedSequence([study_seed, number, _ADAPTIVE_KEY]).generate_state(1)[0])


def split_rng(study_seed: int) -> np.random.Generator:
    """Stream of the train/validation/test shuffle that every trial of a study shares."""
    return np.random.default_rng([study_seed, _SPLIT_KEY])


def trial_seed(study_seed: int, number: int) -> int:
    """Seed for weights, dropout masks and shuffling of one trial; fits Keras' 32-bit range."""
    return int(np.random.SeedSequence([study_seed, number]).generate_state(1)[0])


def order_seed(study_seed: int) -> int:
    """Seed of a pack's batch order: the study's, so a trial meets the same batches in any pack."""
    return int(np.random.SeedSequence([study_seed, _ORDER_KEY]).generate_state(1)[0])


def epoch_order_seed(study_seed: int, epoch: int) -> int:
    """Seed of the batch order of one epoch of a pack trained epoch by epoch (a pruner):
    rebuilding a shrunk pack reseeds Keras, so each epoch's order is fixed on its own."""
    return int(np.random.SeedSequence([study_seed, _ORDER_KEY, epoch]).generate_state(1)[0])


def pack_dropout_seed(member_seeds: list[int], layer: int) -> int:
    """Seed of a pack's dropout masks after hidden layer ``layer`` (1-based).

    Derived from the first member's trial seed, as packs have always done, so the
    article's two-layer packs draw the masks they drew before.
    """
    return int(member_seeds[0]) % 2**31 + layer
