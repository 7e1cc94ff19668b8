"""Hyperparameter importance: the surrogate finds the parameter that drives val accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scheduler.importance import MIN_TRIALS, format_importance, hyperparameter_importance
from seqsweep.db import TrialRecord
from tests.conftest import run_bench, table_rows


def _trials(n: int, score, *, seed: int = 0, status: str = "succeeded") -> list[TrialRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        params = {
            "dense_units": int(rng.choice([32, 64, 128, 256])),
            "dropout_rate1": float(rng.uniform(0, 0.5)),
            "dropout_rate2": float(rng.uniform(0, 0.5)),
            "learning_rate": float(10 ** rng.uniform(-4, -2)),
            "batch_size": 32,
        }
        acc = score(params) + float(rng.normal(0, 0.002))
        out.append(
            TrialRecord(
                i, 1, i, params, status, 1, None, None, None, None, None, 1 - acc, acc,
                None, None, None,
            )
        )  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("driver", "score"),
    [
        ("learning_rate", lambda p: 0.9 + 0.05 * math.log10(p["learning_rate"])),
        ("dense_units", lambda p: 0.6 + p["dense_units"] / 1000),
        ("dropout_rate2", lambda p: 0.9 - 0.4 * p["dropout_rate2"]),
    ],
)
def test_the_parameter_that_drives_accuracy_ranks_first(driver: str, score) -> None:
    importance = hyperparameter_importance(_trials(60, score))
    assert importance is not None
    first = importance.params[0]
    assert first.name == driver
    assert first.share > 0.8, importance
    assert importance.surrogate_r2 > 0.8
    assert math.isclose(sum(p.share for p in importance.params), 1.0)
    assert importance.constant == ("batch_size",)  # one value everywhere: nothing to rank
    text = format_importance(importance)
    assert "random-forest surrogate" in text and text.splitlines()[1].split()[0] == driver


def test_noise_only_is_flagged_as_noise() -> None:
    rng = np.random.default_rng(3)
    importance = hyperparameter_importance(_trials(40, lambda p: float(rng.uniform(0.5, 0.9))))
    assert importance is not None and importance.surrogate_r2 < 0.1
    assert "read this ranking as noise" in format_importance(importance)


def test_too_few_or_unfinished_trials_give_no_ranking() -> None:
    assert hyperparameter_importance(_trials(MIN_TRIALS - 1, lambda p: 0.5)) is None
    unfinished = _trials(30, lambda p: 0.5, status="failed")
    assert hyperparameter_importance(unfinished) is None
    assert "needs at least 8 succeeded trials" in format_importance(None)


def test_text_choices_are_ranked_too() -> None:
    trials = _trials(40, lambda p: 0.5)
    # A text-valued parameter that decides accuracy on its own.
    trials = [
        TrialRecord(**{**t.__dict__, "params": {**t.params, "act": a}, "val_accuracy": v})
        for t, (a, v) in zip(trials, [("relu", 0.9), ("tanh", 0.6)] * 20, strict=True)
    ]
    importance = hyperparameter_importance(trials)
    assert importance is not None and importance.params[0].name == "act"


def test_an_absent_conditional_parameter_takes_no_credit_for_the_depth() -> None:
    """Depth decides accuracy; dense_units3 (absent from 2-layer trials) does nothing.
    Shuffling its presence would hand it n_layers' effect; it is shuffled where present."""
    rng = np.random.default_rng(4)
    trials = []
    for i in range(60):
        params = {"n_layers": int(rng.choice([2, 3])), "learning_rate": float(rng.uniform(0, 1))}
        if params["n_layers"] == 3:
            params["dense_units3"] = int(rng.choice([8, 16, 32]))
        acc = 0.6 + 0.1 * params["n_layers"] + float(rng.normal(0, 0.002))
        trials.append(
            TrialRecord(
                i, 1, i, params, "succeeded", 1, None, None, None, None, None, 1 - acc, acc,
                None, None, None,
            )
        )  # fmt: skip
    importance = hyperparameter_importance(trials)
    assert importance is not None
    shares = {p.name: p.share for p in importance.params}
    assert importance.params[0].name == "n_layers" and shares["n_layers"] > 0.8, importance
    assert shares["dense_units3"] < 0.1, importance


def test_the_cache_serves_the_same_ranking_until_a_result_changes(
    db_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy

    from scheduler import importance_cache
    from seqsweep.db import ResultStore
    from seqsweep.settings import CACHE_ENV
    from tests.test_store import _claim, _create, _result

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    ranked = []
    real = importance_cache.hyperparameter_importance
    monkeypatch.setattr(
        importance_cache,
        "hyperparameter_importance",
        lambda *a: ranked.append(1) or real(*a),  # type: ignore[func-returns-value]
    )
    store = ResultStore(db_url)
    study, _ = _create(store, 42, name="a")
    other, _ = _create(store, 0, name="b")
    for number in range(40):
        params = store.get_trials(study.id, [number])[0].params
        store.finish_trial(
            _claim(store, study.id, number), _result(0.6 + params["dense_units"] / 1000)
        )
    running = _claim(store, study.id, 40)  # running: not a result

    def rank(study_id: int = study.id, metric: str = "val_accuracy") -> object:
        return importance_cache.cached_importance(store, study_id, metric)

    first = rank()
    assert first is not None and rank() == first and len(ranked) == 1
    (cached,) = (tmp_path / "cache").iterdir()
    assert cached.stat().st_mode & 0o077 == 0
    store.fail_trial(_claim(store, study.id, 41), "ValueError: boom")
    assert rank() == first and len(ranked) == 1  # a failure is not a result

    # A new result, a changed value, another objective or another study: ranked anew.
    assert store.finish_trial(running, _result(0.9))
    assert rank() is not None and len(ranked) == 2
    with store.session() as conn:
        conn.execute(
            sqlalchemy.text(
                "UPDATE trials SET val_accuracy = 0.1 WHERE study_id = :s AND number = 0"
            ),
            {"s": study.id},
        )
    rank()
    by_loss = rank(metric="val_loss")
    rank(other.id, "val_loss")
    assert len(ranked) == 5
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one file per study

    cached.write_text("{not json")  # a damaged cache costs a ranking, never an error
    assert rank(metric="val_loss") == by_loss and len(ranked) == 6


@pytest.mark.slow
def test_the_importance_bench_times_the_import_and_each_ranking() -> None:
    proc = run_bench("importance.py", "--trials", "30", "2000", "--repeat", "1", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert float(rows["scikit-learn import (fresh process)"][1]) > 0, proc.stdout
    # A study over 1,000 trials is ranked on a random 1,000 of them.
    assert rows["ranking 30 trials"][0] == "30" and rows["ranking 2000 trials"][0] == "1000"
    assert float(rows["ranking 2000 trials"][1]) > 0, proc.stdout
