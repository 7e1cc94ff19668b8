"""``run_trial`` called directly, and the task's handling of failures."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.sampling import sample
from scheduler.space import Fixed, SearchSpace, default_space
from seqsweep.dataset import Dataset, Splits, split_dataset
from seqsweep.db import ResultStore, TrialResult
from seqsweep.errors import TrialError
from seqsweep.seeds import trial_seed
from seqsweep.trial.alone import run_trial
from tests.conftest import live_traces
from worker.tasks import _train_and_record

PARAMS = {"dense_units": 16, "dropout_rate1": 0.1, "dropout_rate2": 0.1, "learning_rate": 1e-2}


def _data(rows: int = 200, scale: float = 1.0) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return Dataset(x * scale, y, ("a", "b"))


@pytest.fixture(scope="module")
def splits() -> Splits:
    return split_dataset(_data(), 0, 0.2, 0.2)


def test_run_trial_returns_final_and_per_epoch_metrics(splits: Splits) -> None:
    result = run_trial(PARAMS, splits, epochs=2, batch_size=16, seed=3)
    assert [e.epoch for e in result.epochs] == [1, 2]
    assert result.val_accuracy == result.epochs[-1].val_accuracy
    assert result.val_loss == result.epochs[-1].val_loss
    assert 0.6 < result.val_accuracy <= 1.0  # a linear rule: learnable in two epochs
    assert 0.0 <= result.test_accuracy <= 1.0 and result.test_loss > 0
    assert result.device == "cpu"
    assert result.duration_s > 0


def test_same_seed_gives_the_same_metrics(splits: Splits) -> None:
    a = run_trial(PARAMS, splits, epochs=1, batch_size=16, seed=11)
    b = run_trial(PARAMS, splits, epochs=1, batch_size=16, seed=11)
    assert a.val_loss == b.val_loss and a.test_loss == b.test_loss


def test_a_trial_leaves_no_traced_step_behind(splits: Splits) -> None:
    """TensorFlow keeps each new model's traced train and test steps for the life of the
    process; a trial dismantles its model's, whether it succeeds or fails."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("only TensorFlow keeps a model's traced steps")
    run_trial(PARAMS, splits, epochs=1, batch_size=16, seed=1)
    before = live_traces()
    run_trial({**PARAMS, "dense_units": 12}, splits, epochs=2, batch_size=16, seed=2)
    with pytest.raises(TrialError):
        run_trial(PARAMS, splits, epochs=1, batch_size=16, seed=3, should_stop=lambda: True)
    assert live_traces() == before


def test_searchable_epochs_override_the_setting(splits: Splits) -> None:
    result = run_trial(
        {**PARAMS, "epochs": 3, "batch_size": 64}, splits, epochs=1, batch_size=16, seed=1
    )
    assert len(result.epochs) == 3


def test_diverging_loss_is_a_trial_error() -> None:
    d = _data(scale=1e30)  # unstandardized huge inputs with a huge step size
    wild = Splits(d.X[:120], d.y[:120], d.X[120:160], d.y[120:160], d.X[160:], d.y[160:], 2)
    with pytest.raises(TrialError, match=r"became (nan|inf) at epoch 1; .*lower learning_rate"):
        run_trial({**PARAMS, "learning_rate": 1e6}, wild, epochs=2, batch_size=16, seed=1)


def test_trial_seed_is_stable_and_distinct() -> None:
    assert trial_seed(1, 2) == trial_seed(1, 2)
    assert len({trial_seed(1, n) for n in range(100)}) == 100
    assert all(0 <= trial_seed(2**62, n) < 2**32 for n in range(5))


@pytest.mark.parametrize("pack_size", [1, 4])
def test_failed_trial_is_recorded_and_the_next_one_runs(sqlite_url: str, pack_size: int) -> None:
    """A failure is data, not a crash: it lands on the trial and the study goes on."""
    store = ResultStore(sqlite_url)
    space = SearchSpace(
        {**default_space().params, "dense_units": Fixed(8), "learning_rate": Fixed(1e-2)}
    )
    params = {n: sample(space, 0, n) for n in range(2)}
    params[0] = {**params[0], "dense_units": 0}  # a Keras error inside the trial
    study, _ = store.create_study(
        "f",
        seed=0,
        fresh_seed=0,
        space=space.to_dict(),
        settings={"epochs": 1, "batch_size": 16, "pack_size": pack_size},
        data=_data(),
        trials=2,
        sample=lambda _seed, n: params[n],
    )
    for number in (0, 1):
        claimed = store.claim(study.id, number, "test", lease_s=60)
        assert claimed is not None
        _train_and_record(store, [claimed])
    first, second = store.get_trials(study.id)
    assert first.status == "failed" and first.error and "ValueError" in first.error
    assert second.status == "succeeded" and second.val_accuracy is not None
    assert len(store.epochs(second.id)) == 1


def test_a_deep_structure_trains_and_keeps_its_layers_packed_or_alone(splits: Splits) -> None:
    from seqsweep.settings import StudySettings
    from seqsweep.trial import pack_key, train

    deep = {
        "n_layers": 3, "dense_units1": 16, "dense_units2": 8, "dense_units3": 8,
        "dropout_rate": 0.1, "activation": "gelu", "batch_norm": True, "optimizer": "sgd",
        "learning_rate": 1e-2,
    }  # fmt: skip
    for pack_size in (1, 8):
        settings = StudySettings(epochs=2, batch_size=16, pack_size=pack_size)
        assert (pack_key(deep, settings) is None) == (pack_size == 1)
        kept: list = []
        (result,) = train(
            {3: deep}, splits, settings, study_seed=0, keep=kept.append, keep_number=3
        )
        assert isinstance(result, TrialResult) and result.pack is None and len(result.epochs) == 2
        dense = [layer.units for layer in kept[0].layers if type(layer).__name__ == "Dense"]
        assert dense == [16, 8, 8, 2]
