"""The pruner rules (``seqsweep.pruning``) on hand-made tables of values per epoch."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from scheduler.data import synthetic_dataset
from seqsweep.db import EpochRecord, ResultStore, TrialResult
from seqsweep.db.records import Recovery
from seqsweep.errors import StudyConflictError, UsageError
from seqsweep.pruning import (
    asha_continues,
    asha_rungs,
    check_prunable,
    continues,
    decision_epochs,
)
from seqsweep.settings import StudySettings
from seqsweep.vocab import OBJECTIVES, Pruner, TrialStatus

ACCURACY = OBJECTIVES["val_accuracy"]
LOSS = OBJECTIVES["val_loss"]


def test_asha_rungs_are_min_epochs_times_powers_of_eta_before_the_last_epoch() -> None:
    assert asha_rungs(1, 3, 10) == (1, 3, 9)
    assert asha_rungs(1, 3, 9) == (1, 3)  # no rung at the last epoch: nothing left to save
    assert asha_rungs(2, 2, 20) == (2, 4, 8, 16)
    assert asha_rungs(3, 3, 3) == ()
    asha = StudySettings(epochs=27, pruner=Pruner.ASHA, min_epochs=1, reduction_factor=3)
    assert decision_epochs(asha) == (1, 3, 9)
    assert decision_epochs(asha, epochs=4) == (1, 3)  # a trial's own (searched) epochs
    median = StudySettings(epochs=5, pruner=Pruner.MEDIAN, min_epochs=2)
    assert decision_epochs(median) == (2, 3, 4)
    assert decision_epochs(StudySettings(epochs=5)) == ()


# Trials in the order they reach rung 1 (epoch 1), with their val_accuracy there, and
# whether each goes on: the top 1/3 of those that got there so far, itself included
# (at least one: the first trials go on only if they lead).
ASHA_TABLE = [
    (0.50, True),  # 1 reached: keep the best 1 -> itself
    (0.40, False),  # 2 reached: best 1 is 0.50
    (0.60, True),  # 3 reached: best 1 is 0.60, itself
    (0.55, False),  # 4 reached: best 1 is 0.60
    (0.58, False),  # 5: best 1 (5 // 3) is 0.60
    (0.59, True),  # 6: best 2 are 0.60, 0.59
    (0.59, True),  # 7: best 2 are 0.60, 0.59 (a tie goes on)
    (0.30, False),
    (0.595, True),  # 9: best 3 are 0.60, 0.595, 0.59
]


def test_asha_rung_rule_on_a_hand_made_table() -> None:
    reached: list[float] = []
    for value, goes_on in ASHA_TABLE:
        reached.append(value)
        assert asha_continues(value, reached, 3, ACCURACY) is goes_on, (value, reached)


def test_asha_follows_the_objective_direction() -> None:
    losses = [0.9, 0.5, 0.7]  # minimized: 0.5 leads
    assert asha_continues(0.5, losses, 3, LOSS)
    assert not asha_continues(0.7, losses, 3, LOSS)
    assert not asha_continues(float("nan"), [float("nan")], 3, LOSS)


def test_continues_decides_only_at_rungs() -> None:
    asha = StudySettings(epochs=10, pruner=Pruner.ASHA, objective="val_loss")
    worse = [0.1, 0.2, 0.3]
    assert not continues(asha, 3, 10, 0.9, worse)  # rung 3: not in the top third
    assert continues(asha, 2, 10, 0.9, worse)  # no rung at epoch 2
    assert continues(asha, 9, 9, 0.9, worse)  # the last epoch of a 9-epoch trial


def test_median_rule_after_warm_up_and_enough_trials() -> None:
    median = StudySettings(epochs=5, pruner=Pruner.MEDIAN, min_epochs=2)
    others = [0.5, 0.6, 0.7, 0.8]  # median 0.65
    assert continues(median, 1, 5, 0.1, others)  # warm-up: min_epochs 2
    assert not continues(median, 2, 5, 0.6, others)
    assert continues(median, 2, 5, 0.65, others)  # the median itself goes on
    assert continues(median, 2, 5, 0.1, others[:3])  # too few others yet
    assert continues(median, 5, 5, 0.1, others)  # the last epoch
    by_loss = StudySettings(epochs=5, pruner=Pruner.MEDIAN, objective="val_loss")
    assert not continues(by_loss, 1, 5, 0.9, others)
    assert continues(by_loss, 1, 5, 0.6, others)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"pruner": "hyperband"}, "--pruner 'hyperband': must be one of none, median, asha"),
        ({"pruner": "asha", "reduction_factor": 1}, "--reduction-factor must be an integer in [2,"),
        (
            {"pruner": "asha", "task": "regression", "objective": "val_mae"},
            "the objective val_mae is only known once a trial ends, not at each epoch; "
            "use --objective val_loss, or --pruner none",
        ),
    ],
)
def test_bad_pruner_settings_are_one_line(settings: dict[str, object], fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        StudySettings(**settings)  # type: ignore[arg-type]
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_pruner_that_could_stop_no_trial_before_its_last_epoch_is_refused() -> None:
    with pytest.raises(UsageError, match="--pruner asha: nothing to prune with --epochs 1 and"):
        check_prunable(StudySettings(epochs=1, pruner=Pruner.ASHA))
    with pytest.raises(UsageError, match="nothing to prune with --epochs 4 and --min-epochs 4"):
        check_prunable(StudySettings(epochs=4, pruner=Pruner.MEDIAN, min_epochs=4))
    # Searched epochs: each trial trains its own count, so the space's most decides,
    # whatever --epochs says.
    check_prunable(StudySettings(epochs=1, pruner=Pruner.ASHA), searched_epochs=20)
    with pytest.raises(UsageError) as caught:
        check_prunable(StudySettings(epochs=10, pruner=Pruner.ASHA), searched_epochs=1)
    assert str(caught.value) == (
        "--pruner asha: nothing to prune with the space's epochs (at most 1) and "
        "--min-epochs 1: a trial could only be stopped at its last epoch; let the space's "
        "epochs go above 1, or --pruner none"
    )
    check_prunable(StudySettings(epochs=1))  # no pruner: nothing to check


def test_pruner_settings_round_trip_and_old_studies_have_none() -> None:
    settings = StudySettings(epochs=9, pruner=Pruner.ASHA, reduction_factor=2, min_epochs=2)
    stored = settings.to_dict()
    assert (stored["pruner"], stored["reduction_factor"], stored["min_epochs"]) == ("asha", 2, 2)
    assert StudySettings.from_dict(stored) == settings
    old = {k: v for k, v in stored.items() if k not in ("pruner", "reduction_factor")}
    assert StudySettings.from_dict(old).pruner is Pruner.NONE


def _pruned_study(url: str, pruner: Pruner = Pruner.ASHA) -> tuple[ResultStore, Any]:
    store = ResultStore(url)
    settings = StudySettings(epochs=3, pruner=pruner).to_dict()
    study, _ = store.create_study(
        "p",
        seed=5,
        fresh_seed=1,
        space={},
        settings=settings,
        data=synthetic_dataset(n_rows=60),
        trials=3,
        sample=lambda seed, number: {"learning_rate": 0.01},
    )
    return store, study


def _epoch(epoch: int, acc: float) -> EpochRecord:
    return EpochRecord(epoch, 1 - acc, acc, 1 - acc, acc)


def test_epochs_are_written_as_they_end_and_a_pruned_trial_is_finished(db_url: str) -> None:
    store, study = _pruned_study(db_url)
    a, b, c = (store.claim(study.id, n, "w", lease_s=60) for n in range(3))
    assert a is not None and b is not None and c is not None
    assert store.record_epoch(1, [(a, _epoch(1, 0.5))], "val_accuracy") == {0: 0.5}
    # b and c train in one pack: one write for both, and every trial's value comes back.
    seen = store.record_epoch(1, [(b, _epoch(1, 0.7)), (c, _epoch(1, 0.6))], "val_accuracy")
    assert seen == {0: 0.5, 1: 0.7, 2: 0.6}
    assert store.record_epoch(2, [(b, _epoch(2, 0.8))], "val_loss") == {1: pytest.approx(0.2)}
    # A claim that lost its trial writes nothing.
    assert store.recover_lost(study.id) == Recovery()
    stale = dataclasses.replace(a, attempt=a.attempt + 1)
    assert store.record_epoch(2, [(stale, _epoch(2, 0.1))], "val_accuracy") == {1: 0.8}

    last = _epoch(1, 0.5)
    result = TrialResult(
        val_loss=0.5, val_accuracy=0.5, test_loss=0.5, test_accuracy=0.5, duration_s=0.1,
        device="cpu", epochs=(last,), metrics={"val_accuracy": 0.5}, pruned=True,
    )  # fmt: skip
    assert store.finish_trial(a, result)
    assert store.get_trials(study.id, [0])[0].status == TrialStatus.PRUNED
    assert store.counts(study.id).as_dict()["pruned"] == 1
    assert store.epochs_trained(study.id) == 4  # 1 of a, 2 of b, 1 of c
    assert store.top_trials(study.id, 5) == []  # only succeeded trials are ranked


def test_relaunch_with_another_pruner_is_refused(sqlite_url: str) -> None:
    _pruned_study(sqlite_url)
    with pytest.raises(StudyConflictError, match=r"pruner: stored asha, given median"):
        _pruned_study(sqlite_url, Pruner.MEDIAN)


def test_a_failed_or_retried_trial_keeps_no_epochs_of_a_lost_attempt(sqlite_url: str) -> None:
    store, study = _pruned_study(sqlite_url)
    lost = store.claim(study.id, 0, "w", lease_s=0.01)
    failing = store.claim(study.id, 1, "w", lease_s=60)
    assert lost is not None and failing is not None
    store.record_epoch(1, [(lost, _epoch(1, 0.5)), (failing, _epoch(1, 0.4))], "val_accuracy")
    store.record_epoch(2, [(lost, _epoch(2, 0.6))], "val_accuracy")
    assert store.fail_trial(failing, "TrialError: val_loss became nan at epoch 2")
    time.sleep(0.05)
    assert store.recover_lost(study.id).requeued == (0,)
    again = store.claim(study.id, 0, "w2", lease_s=60)
    assert again is not None and again.attempt == 2
    assert store.epochs_trained(study.id) == 0
