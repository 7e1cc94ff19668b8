"""The article's default space gives the trials and the metrics it gave before issue 10.

``tests/assets/pinned_default_space.json`` was written by the code before the search
space grew structure parameters (see tests/assets/README.md); a change that moves a
sampled value, a seed stream, the split or the article's network shows up here.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from scheduler.sampling import sample
from scheduler.space import default_space
from seqsweep.dataset import Dataset
from seqsweep.settings import StudySettings
from seqsweep.trial import study_splits, train
from tests.conftest import REPO

PINNED: dict[str, Any] = json.loads(
    (REPO / "tests" / "assets" / "pinned_default_space.json").read_text()
)
SEED = PINNED["seed"]
METRICS = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")


def _data() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return Dataset(x, y, ("no", "yes"))


def _check(result: Any, pinned: dict[str, float]) -> None:
    for name in METRICS:
        assert getattr(result, name) == pytest.approx(pinned[name], abs=1e-5), name


def test_the_default_space_samples_the_pinned_trials() -> None:
    for number, params in PINNED["params"].items():
        assert sample(default_space(), SEED, int(number)) == params


@pytest.mark.parametrize("packed", [False, True], ids=["alone", "packed"])
def test_the_default_space_trains_to_the_pinned_metrics(packed: bool) -> None:
    settings = StudySettings(**{**PINNED["settings"], "pack_size": 8 if packed else 1})
    splits = study_splits(_data(), SEED, settings)
    params = {int(n): p for n, p in PINNED["params"].items()}
    if packed:
        numbers = PINNED["pack"]
        outcomes = train({n: params[n] for n in numbers}, splits, settings, study_seed=SEED)
        for number, result in zip(numbers, outcomes, strict=True):
            _check(result, PINNED["packed"][str(number)])
            assert result.pack == tuple(numbers)
    else:
        for number in (0, 1, 2):
            (result,) = train({number: params[number]}, splits, settings, study_seed=SEED)
            _check(result, PINNED["alone"][str(number)])
