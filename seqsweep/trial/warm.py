"""A first tiny training, to warm a process up before its first trial.

A pool process pays for the backend's import and for its first trace (the first
``fit`` of a process sets up what later ones reuse) once; :func:`warm_up` pays both
on a few rows of made-up data, so that the first real trial does not.
"""

from __future__ import annotations

import numpy as np

from seqsweep.dataset import Dataset, split_dataset
from seqsweep.settings import StudySettings
from seqsweep.trial.packed import run_pack

#: Rows of the made-up data: enough for three non-empty splits and two batches.
_ROWS = 64


def warm_up() -> None:
    """Import the backend and train a pack of one tiny network for one epoch."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(_ROWS, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    splits = split_dataset(Dataset(x, y, ("a", "b")), 0, 0.25, 0.25)
    params = {"dense_units": 4, "dropout_rate1": 0.1, "dropout_rate2": 0.1, "learning_rate": 1e-3}
    settings = StudySettings(epochs=1, batch_size=16)
    run_pack([params], [0], splits, settings, study_seed=0)
