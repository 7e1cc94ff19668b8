"""Sampling is a pure function of (study seed, trial number)."""

from __future__ import annotations

import math

from scheduler.sampling import sample
from scheduler.space import Choice, IntRange, SearchSpace, default_space


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
