"""Adaptive sampling (``--sampler tpe|gp|cmaes``): picks from finished trials, state rebuilt
from the DB."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest

from scheduler.adaptive import AdaptiveSampler, default_in_flight
from scheduler.sampling import sample
from scheduler.space import SearchSpace
from seqsweep.db import EpochRecord, ResultStore, TrialResult
from seqsweep.errors import UsageError
from seqsweep.settings import StudySettings
from seqsweep.vocab import OBJECTIVES, Sampler, TrialStatus
from tests.conftest import create_study

SPACE = SearchSpace.from_dict(
    {
        "n_layers": {"type": "choice", "values": [1, 2]},
        "dense_units1": {"type": "choice", "values": [8, 16]},
        "dense_units2": {"type": "choice", "values": [8, 16]},
        "dropout_rate": {"type": "uniform", "low": 0.0, "high": 0.5},
        "learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
    }
)
BEST_RATE = 3e-3
#: A conditional numeric parameter too (a second layer's dropout), which GP and CMA-ES
#: cannot model jointly with the rest and must draw independently.
DEEP = SearchSpace.from_dict(
    {
        "n_layers": {"type": "choice", "values": [1, 2]},
        "dense_units1": {"type": "choice", "values": [8, 16]},
        "dense_units2": {"type": "choice", "values": [8, 16]},
        "dropout_rate1": {"type": "uniform", "low": 0.0, "high": 0.5},
        "dropout_rate2": {"type": "uniform", "low": 0.0, "high": 0.5},
        "learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
    }
)


def _accuracy(params: dict[str, Any]) -> float:
    """A made-up objective, best at learning_rate 3e-3."""
    return 0.9 - 0.1 * abs(math.log10(params["learning_rate"] / BEST_RATE))


def _study(
    url: str, sampler: Sampler = Sampler.TPE, space: SearchSpace = SPACE
) -> tuple[ResultStore, Any]:
    store = ResultStore(url)
    settings = StudySettings(epochs=1, sampler=sampler).to_dict()
    study, added = create_study(
        store, name=str(sampler), space=space, settings=settings, seed=5, fresh_seed=1
    )
    assert added == []
    return store, study


def _finish_queued(store: ResultStore, study: Any) -> None:
    for number in store.numbers_in_state(study.id, TrialStatus.QUEUED):
        claimed = store.claim(study.id, number, "w", lease_s=60)
        assert claimed is not None
        acc = _accuracy(claimed.params)
        store.finish_trial(
            claimed,
            TrialResult(
                val_loss=1 - acc,
                val_accuracy=acc,
                test_loss=1 - acc,
                test_accuracy=acc,
                duration_s=0.1,
                device="cpu",
                epochs=(EpochRecord(1, 1 - acc, acc, 1 - acc, acc),),
                metrics={"val_accuracy": acc, "val_loss": 1 - acc},
            ),
        )


def test_tpe_keeps_a_window_in_flight_learns_and_resumes_from_the_db(sqlite_url: str) -> None:
    store, study = _study(sqlite_url)
    tpe = AdaptiveSampler(SPACE, Sampler.TPE, OBJECTIVES["val_accuracy"])
    assert tpe.top_up(store, study, target=30, in_flight=4) == [0, 1, 2, 3]
    assert store.numbers_in_state(study.id, TrialStatus.QUEUED) == [0, 1, 2, 3]
    assert tpe.top_up(store, study, target=30, in_flight=4) == []  # the window is full
    assert store.counts(study.id).total == 4
    while store.counts(study.id).total < 30:
        _finish_queued(store, study)
        tpe.top_up(store, study, target=30, in_flight=4)
    _finish_queued(store, study)
    tpe.top_up(store, study, target=30, in_flight=4)
    trials = store.get_trials(study.id)
    assert [t.number for t in trials] == list(range(30))  # each once, never past the target
    assert all(t.status == TrialStatus.SUCCEEDED for t in trials)
    for t in trials:  # conditional: a second layer's units only with a second layer
        assert ("dense_units2" in t.params) == (t.params["n_layers"] == 2)

    def miss(params: list[dict[str, Any]]) -> float:
        return sum(abs(math.log10(p["learning_rate"] / BEST_RATE)) for p in params) / len(params)

    # TPE's first 10 picks are random; its last ones home in on the best rate.
    randomly = miss([sample(SPACE, 5, n) for n in range(200)])  # about 1.06 decades
    assert miss([t.params for t in trials[-10:]]) < 0.6 * randomly

    # A relaunch after the scheduler was killed: a new sampler reads the DB and picks
    # what the old one would have picked; the finished trials are what it learns from.
    fresh = AdaptiveSampler(SPACE, Sampler.TPE, OBJECTIVES["val_accuracy"])
    assert fresh.pick(study.seed, 30, trials) == tpe.pick(study.seed, 30, trials)
    assert fresh.pick(study.seed, 30, trials) != fresh.pick(study.seed, 30, [])
    assert fresh.top_up(store, study, target=32, in_flight=4) == [30, 31]
    assert store.numbers_in_state(study.id, TrialStatus.QUEUED) == [30, 31]
    picked = store.get_trials(study.id, [30])[0].params
    assert picked == tpe.pick(study.seed, 30, trials)


def _run(store: ResultStore, study: Any, picker: AdaptiveSampler, target: int) -> list[Any]:
    """Finish every queued trial and top the window up, until ``target`` trials are done."""
    while store.counts(study.id).total < target:
        _finish_queued(store, study)
        picker.top_up(store, study, target=target, in_flight=4)
    _finish_queued(store, study)
    trials = store.get_trials(study.id)
    assert [t.number for t in trials] == list(range(target))
    assert all(t.status == TrialStatus.SUCCEEDED for t in trials)
    return trials


def _miss(params: list[dict[str, Any]]) -> float:
    """Mean distance, in decades, of the picked learning rates from the best one."""
    return sum(abs(math.log10(p["learning_rate"] / BEST_RATE)) for p in params) / len(params)


def _conditional(trials: list[Any]) -> None:
    for t in trials:  # a second layer's parameters only with a second layer
        assert ("dense_units2" in t.params) == (t.params["n_layers"] == 2), t.params
        assert ("dropout_rate2" in t.params) == (t.params["n_layers"] == 2), t.params
        assert 0.0 <= t.params["dropout_rate1"] <= 0.5
    assert {t.params["n_layers"] for t in trials} == {1, 2}


@pytest.mark.parametrize(
    ("name", "target", "learned"),
    # GP samples at random until 10 trials finished (GPSampler's n_startup_trials), so
    # its last 4 of 16 are its own.
    [(Sampler.GP, 16, 4), (Sampler.CMAES, 30, 10)],
)
def test_gp_and_cmaes_learn_and_resume_from_the_db(
    sqlite_url: str, name: Sampler, target: int, learned: int
) -> None:
    store, study = _study(sqlite_url, name, DEEP)
    picker = AdaptiveSampler(DEEP, name, OBJECTIVES["val_accuracy"])
    trials = _run(store, study, picker, target)
    _conditional(trials)
    randomly = _miss([sample(DEEP, 5, n) for n in range(200)])  # about 1.06 decades
    assert _miss([t.params for t in trials[-learned:]]) < 0.6 * randomly

    # A relaunch: a new sampler rebuilds its state from the DB alone and picks what the
    # old one would have; what it learned from the finished trials is not lost.
    fresh = AdaptiveSampler(DEEP, name, OBJECTIVES["val_accuracy"])
    resumed = fresh.pick(study.seed, target, trials)
    assert resumed == picker.pick(study.seed, target, trials)
    assert resumed != fresh.pick(study.seed, target, [])
    assert fresh.top_up(store, study, target=target + 1, in_flight=4) == [target]
    assert store.get_trials(study.id, [target])[0].params == resumed


def test_cmaes_replay_rebuilds_every_generation_from_finished_trials(sqlite_url: str) -> None:
    """Optuna's CmaEsSampler keeps its distribution in trial attributes the DB lacks:
    replaying the finished trials brings it back to the generation it had reached."""
    import optuna

    from scheduler.cmaes_replay import GENERATION_ATTR, cma_dims, popsize, replay

    store, study = _study(sqlite_url, Sampler.CMAES, DEEP)
    picker = AdaptiveSampler(DEEP, Sampler.CMAES, OBJECTIVES["val_accuracy"])
    trials = _run(store, study, picker, 27)
    done = [picker._frozen(t) for t in trials]
    dims = cma_dims(done)
    # Choices and the second layer's dropout are drawn at random; CMA-ES models the rest.
    assert sorted(dims) == ["dropout_rate1", "learning_rate"]
    size = popsize(len(dims))
    assert size == 6
    replayed = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.CmaEsSampler(seed=1, popsize=size)
    )
    assert replay(replayed, done, dims, size) == 27 // 6
    nxt = replayed.ask()
    assert set(nxt.relative_params) == set(dims)
    assert replayed.get_trials(deepcopy=False)[-1].system_attrs[GENERATION_ATTR] == 4
    # Without the replay, the same trials leave CMA-ES at its first generation.
    plain = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.CmaEsSampler(seed=1, popsize=size)
    )
    for frozen in done:
        plain.add_trial(frozen)
    plain.ask().relative_params  # noqa: B018
    assert plain.get_trials(deepcopy=False)[-1].system_attrs[GENERATION_ATTR] == 0


def test_tpe_draws_conditional_parameters_only_where_used(sqlite_url: str) -> None:
    store, study = _study(sqlite_url, Sampler.TPE, DEEP)
    _conditional(
        _run(store, study, AdaptiveSampler(DEEP, Sampler.TPE, OBJECTIVES["val_accuracy"]), 16)
    )


def test_cancelled_study_gets_no_more_trials(sqlite_url: str) -> None:
    store, study = _study(sqlite_url)
    tpe = AdaptiveSampler(SPACE, Sampler.TPE, OBJECTIVES["val_accuracy"])
    tpe.top_up(store, study, target=10, in_flight=4)
    store.cancel(study.id)
    assert tpe.top_up(store, study, target=10, in_flight=8) is None
    assert store.counts(study.id).total == 4


def test_report_names_the_sampler(sqlite_url: str) -> None:
    from scheduler.report import study_report

    store, study = _study(sqlite_url)
    assert study_report(store, study.name).as_dict()["sampler"] == "tpe"


def test_default_window_is_twice_the_workers_at_least_four() -> None:
    assert [default_in_flight(n) for n in (0, 1, 2, 3, 8)] == [4, 4, 4, 6, 16]


@pytest.mark.parametrize(
    ("name", "module", "line"),
    [
        (Sampler.TPE, "optuna", '--sampler tpe needs Optuna: pip install "seqsweep[optuna]"'),
        (Sampler.GP, "optuna", '--sampler gp needs Optuna: pip install "seqsweep[gp]"'),
        (
            Sampler.GP,
            "torch",
            "--sampler gp needs PyTorch (Optuna's GPSampler fits its model with it): "
            'pip install "seqsweep[gp]"',
        ),
        (
            Sampler.CMAES,
            "cmaes",
            "--sampler cmaes needs the cmaes package (Optuna's CmaEsSampler runs on it): "
            'pip install "seqsweep[cmaes]"',
        ),
    ],
)
def test_without_its_library_a_sampler_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: Sampler, module: str, line: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it raises ImportError
    with pytest.raises(UsageError) as refused:
        AdaptiveSampler(SPACE, name, OBJECTIVES["val_accuracy"])
    assert str(refused.value) == line


def test_a_pruned_trial_is_told_to_optuna_as_pruned_at_its_last_epoch(sqlite_url: str) -> None:
    from optuna.trial import TrialState

    store, study = _study(sqlite_url)
    sampler = AdaptiveSampler(SPACE, Sampler.TPE, OBJECTIVES["val_accuracy"])
    assert sampler.top_up(store, study, target=2, in_flight=2) == [0, 1]
    claimed = store.claim(study.id, 0, "w", lease_s=60)
    assert claimed is not None
    epochs = (EpochRecord(1, 0.9, 0.4, 0.9, 0.4), EpochRecord(2, 0.8, 0.5, 0.8, 0.5))
    stopped = TrialResult(0.8, 0.5, 0.8, 0.5, 0.1, "cpu", epochs, pruned=True)
    assert store.finish_trial(claimed, stopped)
    record = store.get_trials(study.id, [0])[0]
    frozen = sampler._frozen(record, 2)
    assert frozen.state == TrialState.PRUNED and frozen.intermediate_values == {2: 0.5}
    # The window refills from a history holding the pruned trial.
    assert sampler.top_up(store, study, target=4, in_flight=2) == [2]
