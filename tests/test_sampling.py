"""Sampling is a pure function of (study seed, trial number)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from scheduler.sampling import point_sampler, sample
from scheduler.space import Choice, Fixed, IntRange, LogUniform, SearchSpace, Uniform, default_space
from seqsweep.errors import UsageError
from seqsweep.vocab import Sampler


def test_same_seed_same_trials() -> None:
    space = default_space()
    first = [sample(space, 42, n) for n in range(20)]
    second = [sample(space, 42, n) for n in reversed(range(20))][::-1]
    assert first == second


def test_different_seed_different_trials() -> None:
    space = default_space()
    a = [sample(space, 1, n) for n in range(10)]
    b = [sample(space, 2, n) for n in range(10)]
    assert all(x != y for x, y in zip(a, b, strict=True))


def test_trials_of_one_study_differ() -> None:
    space = default_space()
    rates = {sample(space, 7, n)["learning_rate"] for n in range(50)}
    assert len(rates) == 50


def test_values_stay_in_their_ranges() -> None:
    space = default_space()
    for n in range(500):
        p = sample(space, 3, n)
        assert p["dense_units"] in (32, 64, 128, 256, 512)
        assert 0.0 <= p["dropout_rate1"] <= 0.5
        assert 0.0 <= p["dropout_rate2"] <= 0.5
        assert 1e-4 <= p["learning_rate"] <= 1e-2
        assert isinstance(p["dense_units"], int)


def test_log_uniform_is_uniform_in_log_space() -> None:
    space = default_space()
    logs = [math.log10(sample(space, 5, n)["learning_rate"]) for n in range(2000)]
    below = sum(v < -3 for v in logs) / len(logs)
    assert 0.45 < below < 0.55  # half the mass below the geometric midpoint 1e-3


def test_adding_a_parameter_keeps_the_others() -> None:
    base = default_space()
    wider = SearchSpace({**base.params, "epochs": IntRange(1, 20), "batch_size": Choice((16, 32))})
    for n in range(10):
        small, big = sample(base, 9, n), sample(wider, 9, n)
        assert {k: big[k] for k in small} == small
        assert 1 <= big["epochs"] <= 20


def _conditional_space() -> SearchSpace:
    return SearchSpace.from_dict(
        {
            "n_layers": {"type": "choice", "values": [1, 2, 3]},
            **{f"dense_units{i}": {"type": "choice", "values": [8, 16]} for i in (1, 2, 3)},
            "optimizer": {"type": "choice", "values": ["adam", "adamw"]},
            "weight_decay": {"type": "choice", "values": [0.0, 0.01]},
            "learning_rate": {"type": "int", "low": 1, "high": 3},  # discrete: on the grid
            "epochs": 2,
        }
    )


def test_sobol_is_a_pure_function_of_seed_and_number() -> None:
    space = default_space()
    first = point_sampler(space, Sampler.SOBOL)
    forward = [first.sample(42, n) for n in range(40)]
    # A fresh sampler asked in another order, for a longer study, agrees trial by trial.
    again = point_sampler(space, Sampler.SOBOL)
    assert [again.sample(42, n) for n in reversed(range(300))][::-1][:40] == forward
    other = [point_sampler(space, Sampler.SOBOL).sample(43, n) for n in range(40)]
    assert all(a != b for a, b in zip(forward, other, strict=True))
    assert forward != [sample(space, 42, n) for n in range(40)]  # not random sampling


def test_sobol_covers_the_space_more_evenly_than_random() -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0)}, custom=True)
    sobol = point_sampler(space, Sampler.SOBOL)
    n = 64

    def worst_gap(values: list[float]) -> int:
        """Most points in one of n equal bins: 1 for a perfectly even spread."""
        return int(np.bincount(np.minimum((np.array(values) * n).astype(int), n - 1)).max())

    assert worst_gap([sobol.sample(7, i)["x"] for i in range(n)]) == 1
    assert worst_gap([sample(space, 7, i)["x"] for i in range(n)]) > 1


def test_sobol_keeps_values_in_range_and_drops_unused_layers() -> None:
    space = _conditional_space()
    sobol = point_sampler(space, Sampler.SOBOL)
    for n in range(200):
        p = sobol.sample(5, n)
        layers = p["n_layers"]
        assert {f"dense_units{i}" for i in range(1, 4)} & set(p) == {
            f"dense_units{i}" for i in range(1, layers + 1)
        }
        assert ("weight_decay" in p) == (p["optimizer"] == "adamw")
        assert p["learning_rate"] in (1, 2, 3) and p["epochs"] == 2


def test_grid_holds_every_distinct_combination_once() -> None:
    space = _conditional_space()
    grid = point_sampler(space, Sampler.GRID)
    # Units of the layers a trial has (2 + 4 + 8), optimizers with their weight decays
    # (adam, adamw x 2), learning rates: conditional parameters make no duplicates.
    assert grid.size == (2 + 4 + 8) * 3 * 3
    trials = [grid.sample(11, n) for n in range(grid.size)]
    keys = {json.dumps(t, sort_keys=True) for t in trials}
    assert len(keys) == grid.size
    unshuffled = [grid.combination(i) for i in range(grid.size)]  # type: ignore[attr-defined]
    assert keys == {json.dumps(t, sort_keys=True) for t in unshuffled}
    assert trials != unshuffled  # shuffled by the seed ...
    assert trials == [point_sampler(space, Sampler.GRID).sample(11, n) for n in range(grid.size)]
    assert trials != [grid.sample(12, n) for n in range(grid.size)]  # ... and only by it
    with pytest.raises(ValueError):
        grid.sample(11, grid.size)


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        (default_space(), "--sampler grid: dropout_rate1 is continuous (uniform in [0.0, 0.5])"),
        (
            SearchSpace({"dense_units": Fixed(8), "learning_rate": LogUniform(1e-4, 1e-2)}),
            "learning_rate is continuous (loguniform",
        ),
        (
            SearchSpace(
                {
                    "epochs": IntRange(1, 5000),
                    "batch_size": IntRange(1, 5000),
                    "dense_units": Fixed(8),
                    "learning_rate": Fixed(0.01),
                }
            ),
            "the space has 25000000 combinations, more than 10000000",
        ),
    ],
    ids=["uniform", "loguniform", "too-large"],
)
def test_grid_refuses_what_it_cannot_enumerate(space: SearchSpace, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        point_sampler(space, Sampler.GRID)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_python_api_refuses_an_unknown_sampler_in_one_line() -> None:
    from scheduler.options import LaunchOptions

    assert LaunchOptions.from_flags(sampler="sobol").settings.sampler is Sampler.SOBOL
    with pytest.raises(UsageError, match=r"^--sampler 'bayes': must be one of random, sobol, grid"):
        LaunchOptions.from_flags(sampler="bayes")
