"""Packed training: the same trials as alone, each its own model, claimed atomically."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from models import fused
from scheduler.data import synthetic_dataset
from seqsweep.dataset import Splits, split_dataset
from seqsweep.db import ResultStore, TrialResult
from seqsweep.errors import TrialError
from seqsweep.seeds import trial_seed
from seqsweep.settings import StudySettings
from seqsweep.structure import Structure
from seqsweep.trial import train
from seqsweep.trial.packed import member_of, pack_shape, run_pack
from seqsweep.vocab import Task
from tests.conftest import live_traces

SETTINGS = StudySettings(epochs=2, batch_size=32, pack_size=8)
NUMBERS = [10, 11, 12, 13, 14, 15]
#: With dropout, a member draws other masks in a pack than alone. Measured on this data
#: (800 validation rows, 2 epochs): |difference| of val accuracy 0.000-0.009, mean 0.005.
MEAN_TOLERANCE, MAX_TOLERANCE = 0.03, 0.08


@pytest.fixture(scope="module")
def splits() -> Splits:
    return split_dataset(synthetic_dataset(n_rows=4000), 0, 0.2, 0.2)


def _params(dropout: float | None, seed: int = 5) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "dense_units": 32,
            "dropout_rate1": float(rng.uniform(0, 0.5)) if dropout is None else dropout,
            "dropout_rate2": float(rng.uniform(0, 0.5)) if dropout is None else dropout,
            "learning_rate": float(10 ** rng.uniform(-3.5, -2)),
        }
        for _ in NUMBERS
    ]


def _results(outcomes: list[TrialResult | TrialError]) -> list[TrialResult]:
    assert all(isinstance(o, TrialResult) for o in outcomes), outcomes
    return outcomes  # type: ignore[return-value]


def _pack_and_alone(splits: Splits, params: list[dict[str, Any]]):
    packed = _results(run_pack(params, NUMBERS, splits, SETTINGS, study_seed=42))
    alone = [
        _results(run_pack([p], [n], splits, SETTINGS, study_seed=42))[0]
        for p, n in zip(params, NUMBERS, strict=True)
    ]
    return packed, alone


def test_without_dropout_a_packed_trial_equals_the_trial_alone(splits: Splits) -> None:
    """Same seed, same batches, no masks: only the packing differs, and nothing changes."""
    packed, alone = _pack_and_alone(splits, _params(dropout=0.0))
    for p, a in zip(packed, alone, strict=True):
        assert p.pack == tuple(NUMBERS) and a.pack is None
        for ep, ea in zip(p.epochs, a.epochs, strict=True):
            assert ep.val_loss == pytest.approx(ea.val_loss, abs=1e-6)
            assert ep.val_accuracy == pytest.approx(ea.val_accuracy, abs=1e-6)
        assert p.test_accuracy == pytest.approx(a.test_accuracy, abs=1e-6)
    # Members with other learning rates really trained differently.
    assert len({round(p.val_loss, 6) for p in packed}) == len(NUMBERS)


def test_with_dropout_packed_and_alone_agree_within_the_stated_tolerance(splits: Splits) -> None:
    packed, alone = _pack_and_alone(splits, _params(dropout=None))
    gaps = [abs(p.val_accuracy - a.val_accuracy) for p, a in zip(packed, alone, strict=True)]
    assert statistics.mean(gaps) <= MEAN_TOLERANCE, gaps
    assert max(gaps) <= MAX_TOLERANCE, gaps


def test_a_member_is_the_article_model_and_can_stand_alone(splits: Splits, tmp_path: Path) -> None:
    from models.packed import extract_member

    params = _params(dropout=0.2)
    kept: list[Any] = []
    results = _results(run_pack(params, NUMBERS, splits, SETTINGS, study_seed=42, keep=kept.append))
    member = extract_member(kept[0], 2, member_of(Structure.from_params(params[2])))
    assert isinstance(member, keras.Sequential)
    kinds = [type(layer).__name__ for layer in member.layers]
    assert kinds == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert member.layers[1].rate == params[2]["dropout_rate1"]
    assert member.optimizer.learning_rate.numpy() == pytest.approx(params[2]["learning_rate"])
    member.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    y_test = keras.utils.to_categorical(splits.y_test, splits.n_classes)
    scores = loaded.evaluate(splits.x_test, y_test, verbose=0, return_dict=True)
    assert scores["accuracy"] == pytest.approx(results[2].test_accuracy, abs=1e-6)
    assert scores["loss"] == pytest.approx(results[2].test_loss, abs=1e-4)


def test_members_start_from_the_weights_their_trial_seed_gives() -> None:
    from models import build_model
    from models.packed import build_packed

    members = [member_of(Structure.from_params(p)) for p in _params(dropout=0.0)]
    seeds = [trial_seed(42, n) for n in NUMBERS]
    pack = build_packed(
        5, 2, units=(32, 32), activations=("relu", "relu"), members=members, seeds=seeds,
        dropout_seeds=[1, 2],
    )  # fmt: skip
    for k in (0, 3):
        keras.utils.set_random_seed(seeds[k])
        alone = build_model(
            5, 2, dense_units=32, dropout_rate1=0, dropout_rate2=0, learning_rate=1e-3
        )
        packed_layers = (*pack.hidden, pack.head)
        for layer, dense in zip(packed_layers, alone.layers[::2], strict=True):
            np.testing.assert_array_equal(np.asarray(layer.kernel[k]), np.asarray(dense.kernel))
            np.testing.assert_array_equal(np.asarray(layer.bias[k][0]), np.asarray(dense.bias))
    first = pack.hidden[0].kernel
    assert not np.array_equal(np.asarray(first[0]), np.asarray(first[3]))


def test_a_diverging_member_fails_alone(splits: Splits) -> None:
    params = _params(dropout=0.1)[:2]
    params[1] = {**params[1], "learning_rate": 1e30}
    healthy_alone = _results(run_pack(params[:1], NUMBERS[:1], splits, SETTINGS, study_seed=1))
    outcomes = run_pack(params, NUMBERS[:2], splits, SETTINGS, study_seed=1)
    assert isinstance(outcomes[1], TrialError) and "diverged" in str(outcomes[1])
    assert isinstance(outcomes[0], TrialResult)
    assert outcomes[0].val_loss == pytest.approx(healthy_alone[0].val_loss, abs=1e-6)


def test_a_pack_refuses_members_of_another_shape(splits: Splits) -> None:
    params = _params(dropout=0.0)[:2]
    params[1] = {**params[1], "dense_units": 64}
    with pytest.raises(ValueError, match="share its structure"):
        run_pack(params, NUMBERS[:2], splits, SETTINGS, study_seed=1)
    article = ((8, 8), ("relu", "relu"), False, "adam")
    assert pack_shape({"dense_units": 8, "epochs": 3, "learning_rate": 1e-3}, SETTINGS) == (
        article,
        3,
        32,
    )


def test_partners_are_queued_trials_of_the_same_shape_claimed_once(db_url: str) -> None:
    from tests.test_store import _create

    store = ResultStore(db_url)
    study, _ = _create(store, 30, name="p")
    trials = store.get_trials(study.id)
    lead = store.claim(study.id, 0, "w1", lease_s=60)
    assert lead is not None
    units = lead.params["dense_units"]
    same = [t.number for t in trials if t.params["dense_units"] == units and t.number != 0]
    assert len(same) >= 3, "the fixture's space should give a few trials per shape"
    taken_elsewhere = store.claim(study.id, same[0], "w2", lease_s=60)
    assert taken_elsewhere is not None

    fits = lambda p: p["dense_units"] == units  # noqa: E731
    partners = store.claim_partners(lead, "w1", lease_s=60, limit=2, fits=fits)
    assert [p.number for p in partners] == same[1:3]  # lowest numbers first, limit honoured
    assert all(p.attempt == 1 and p.params["dense_units"] == units for p in partners)
    again = store.claim_partners(lead, "w1", lease_s=60, limit=100, fits=fits)
    assert [p.number for p in again] == same[3:]  # never the same trial twice
    states = {t.number: t.status for t in store.get_trials(study.id)}
    assert all(states[n] == "running" for n in [0, *same])
    assert all(s == "queued" for n, s in states.items() if n not in [0, *same])
    assert store.claim(study.id, same[1], "w3", lease_s=60) is None  # its own message acks


# -- structures beyond the article's --------------------------------------------------

DEEP = {
    "n_layers": 3, "dense_units1": 24, "dense_units2": 16, "dense_units3": 8,
    "dropout_rate": 0.0, "activation": "gelu", "batch_norm": True, "optimizer": "sgd",
}  # fmt: skip


def _deep(seed: int = 7, **fixed: Any) -> list[dict[str, Any]]:
    """Members of one 3-layer gelu + batch-norm + SGD shape that differ in their rates."""
    rng = np.random.default_rng(seed)
    return [
        {
            **DEEP,
            "learning_rate": float(10 ** rng.uniform(-2.5, -1.5)),
            "l2": float(rng.choice([0.0, 1e-3])),
            **fixed,
        }
        for _ in NUMBERS[:4]
    ]


@pytest.fixture(scope="module")
def small() -> Splits:
    return split_dataset(synthetic_dataset(n_rows=800), 0, 0.2, 0.2)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_deep_packed_trial_equals_the_trial_alone(small: Splits, task: str) -> None:
    """3 layers, gelu, batch norm (per-member statistics), SGD with momentum and members of
    their own learning rate and L2: packed, each member trains as in a pack of one."""
    splits = small
    if task == "regression":  # a number to predict: the first feature's square (near unit scale)
        splits = Splits(
            small.x_train, small.x_train[:, 0] ** 2 - 1, small.x_val, small.x_val[:, 0] ** 2 - 1,
            small.x_test, small.x_test[:, 0] ** 2 - 1, 0, Task.REGRESSION, 10.0, 2.0,
        )  # fmt: skip
    params = _deep()[:3]
    numbers = NUMBERS[:3]
    packed = _results(run_pack(params, numbers, splits, SETTINGS, study_seed=42))
    for k, (p, n) in enumerate(zip(params, numbers, strict=True)):
        (alone,) = _results(run_pack([p], [n], splits, SETTINGS, study_seed=42))
        for ep, ea in zip(packed[k].epochs, alone.epochs, strict=True):
            assert ep.val_loss == pytest.approx(ea.val_loss, rel=1e-4, abs=1e-5), k
        for name, value in alone.metrics.items():
            assert packed[k].metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    assert len({round(p.val_loss, 5) for p in packed}) == len(numbers)


def test_a_deep_member_stands_alone_with_its_structures_layers(small: Splits) -> None:
    splits = small
    from models.packed import extract_member

    (p,) = _deep(seed=3)[:1]
    kept: list[Any] = []
    (packed,) = _results(run_pack([p], [5], splits, SETTINGS, study_seed=9, keep=kept.append))
    member = extract_member(kept[0], 0, member_of(Structure.from_params(p)), "sgd", 0.9)
    kinds = [type(layer).__name__ for layer in member.layers]
    assert kinds == ["Dense", "BatchNormalization", "Activation", "Dropout"] * 3 + ["Dense"]
    assert [layer.units for layer in member.layers if hasattr(layer, "units")] == [24, 16, 8, 2]
    y_test = keras.utils.to_categorical(splits.y_test, splits.n_classes)
    scores = member.evaluate(splits.x_test, y_test, verbose=0, return_dict=True)
    assert scores["accuracy"] == pytest.approx(packed.test_accuracy, abs=1e-6)
    assert scores["loss"] == pytest.approx(packed.test_loss, rel=1e-4)


def test_members_that_differ_only_in_rates_share_a_pack() -> None:
    a, b = _deep(seed=1)[:2]
    b = {**b, "dropout_rate": 0.3, "weight_decay": 0.1}
    assert pack_shape(a, SETTINGS) == pack_shape(b, SETTINGS)
    assert pack_shape(a, SETTINGS) != pack_shape({**a, "activation": "relu"}, SETTINGS)
    assert pack_shape(a, SETTINGS) != pack_shape({**a, "batch_norm": False}, SETTINGS)
    assert pack_shape(a, SETTINGS) != pack_shape({**a, "optimizer": "adam"}, SETTINGS)
    assert pack_shape(a, SETTINGS) != pack_shape({**a, "dense_units3": 9}, SETTINGS)


def test_a_pruned_member_leaves_the_pack_and_its_partners_train_on_unchanged(
    small: Splits,
) -> None:
    """Pruning trial 11 at epoch 1 stops its epochs there; without dropout, its partners
    end exactly as in a pack that never held it (weights and optimizer state carry over
    when the pack shrinks)."""
    settings = StudySettings(epochs=3, batch_size=32, pack_size=8)
    params = _params(dropout=0.0)[:3]
    seen: list[tuple[int, list[int]]] = []

    def prune_11(epoch: int, records: dict[int, Any]) -> set[int]:
        seen.append((epoch, sorted(records)))
        return {11} if epoch == 1 else set()

    three = _results(run_pack(params, [10, 11, 12], small, settings, study_seed=42,
                              stops_at=prune_11))  # fmt: skip
    # The pack asks at each epoch's end before the last, about the members still in it.
    assert seen == [(1, [10, 11, 12]), (2, [10, 12])]
    assert [r.pruned for r in three] == [False, True, False]
    assert [len(r.epochs) for r in three] == [3, 1, 3]
    pruned = three[1]
    assert pruned.val_accuracy == pruned.epochs[-1].val_accuracy
    assert pruned.test_accuracy is not None and pruned.pack == (10, 11, 12)

    two = _results(run_pack([params[0], params[2]], [10, 12], small, settings, study_seed=42,
                            stops_at=lambda epoch, records: set()))  # fmt: skip
    for kept, alone in zip((three[0], three[2]), two, strict=True):
        assert not alone.pruned
        for a, b in zip(kept.epochs, alone.epochs, strict=True):
            assert a.val_loss == pytest.approx(b.val_loss, abs=1e-6)
        assert kept.test_loss == pytest.approx(alone.test_loss, abs=1e-6)


def test_a_pruned_trial_alone_stops_at_its_epoch(small: Splits) -> None:
    settings = StudySettings(epochs=3, batch_size=32, pack_size=1)
    asked: list[int] = []

    def prune_at_2(epoch: int, records: dict[int, Any]) -> set[int]:
        asked.append(epoch)
        return set(records) if epoch == 2 else set()

    (result,) = _results(train({7: _params(0.0)[0]}, small, settings, study_seed=42,
                               stops_at=prune_at_2))  # fmt: skip
    assert asked == [1, 2] and result.pruned and len(result.epochs) == 2
    assert result.val_loss == result.epochs[-1].val_loss


def test_a_pack_that_is_not_kept_leaves_no_traced_step_behind(small: Splits) -> None:
    """A pack whose key came once is not kept, and its traced steps are dismantled
    (TensorFlow would hold them for the life of the process); a kept pack keeps its own."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only TensorFlow keeps a model's traced steps")
    from seqsweep.trial import packed

    settings = StudySettings(epochs=1, batch_size=32, pack_size=2)
    packed._BUILT.clear()
    packed._ASKED.clear()
    params = [{**_params(0.2)[0], "dense_units": units} for units in (8, 8, 12, 12)]
    _results(run_pack(params[:2], [1, 2], small, settings, study_seed=3))
    before = live_traces()
    _results(run_pack(params[2:], [3, 4], small, settings, study_seed=3))
    assert not packed._BUILT and live_traces() == before
    _results(run_pack(params[2:], [3, 4], small, settings, study_seed=3))  # its key's 2nd
    (kept,) = packed._BUILT.values()
    assert kept.train_function is not None and live_traces() > before
    packed._BUILT.clear()


@pytest.mark.parametrize("kind", ["adam_dropout_l2", "sgd_batch_norm", "adam_fused"])
def test_a_pack_of_a_built_key_reuses_its_model_and_trains_as_a_new_one(
    small: Splits, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third pack of a key in a process trains on the second one's model (kept once
    the key came twice), reset to the new members' initial weights, batch-norm
    statistics, rates, dropout seeds and a fresh optimizer: no new model and no new
    traced step (each one leaks in Keras), and the same results as a pack built anew.
    ``adam_fused``: every update compiled (models.fused), and none compiled again."""
    from seqsweep.trial import packed

    if kind == "adam_fused":
        monkeypatch.setattr(fused, "FUSE_MIN_SIZE", 1)
    settings = StudySettings(epochs=2, batch_size=32, pack_size=4)
    rng = np.random.default_rng(7)
    base = {"dense_units": 8} if kind != "sgd_batch_norm" else {**DEEP, "dropout_rate": 0.2}
    params = [
        {
            **base,
            **({"dropout_rate1": float(rng.uniform(0.1, 0.5))} if "dense_units" in base else {}),
            "learning_rate": float(10 ** rng.uniform(-3, -2)),
            "l2": float(10 ** rng.uniform(-5, -3)),
        }
        for _ in range(6)
    ]
    packed._BUILT.clear()
    packed._ASKED.clear()
    _results(run_pack(params[:3], [1, 2, 3], small, settings, study_seed=9))
    assert not packed._BUILT  # a key seen once may never come back: nothing is kept
    _results(run_pack(params[:3], [1, 2, 3], small, settings, study_seed=9))
    (model,) = packed._BUILT.values()
    step = model.train_function
    traced = live_traces() if keras.backend.backend() == "tensorflow" else None
    compiled = dict(getattr(model.optimizer, "fused_updates", {}))
    if kind == "adam_fused" and keras.backend.backend() == "tensorflow":
        assert len(compiled) == len(model.trainable_variables)
    reused = _results(run_pack(params[3:], [4, 5, 6], small, settings, study_seed=9))
    assert list(packed._BUILT.values()) == [model] and model.train_function is step
    assert getattr(model.optimizer, "fused_updates", {}) == compiled
    if keras.backend.backend() == "tensorflow":
        assert live_traces() == traced
    packed._BUILT.clear()
    fresh = _results(run_pack(params[3:], [4, 5, 6], small, settings, study_seed=9))
    assert next(iter(packed._BUILT.values())) is not model
    for a, b in zip(reused, fresh, strict=True):
        for ea, eb in zip(a.epochs, b.epochs, strict=True):
            assert ea.val_loss == pytest.approx(eb.val_loss, abs=1e-6)
            assert ea.val_accuracy == pytest.approx(eb.val_accuracy, abs=1e-6)
        for name, value in b.metrics.items():
            assert a.metrics[name] == pytest.approx(value, abs=1e-6), name
    assert len({round(r.val_loss, 6) for r in fresh}) == 3  # each member its own rates


@pytest.mark.parametrize("base", ["adam_dropout", "sgd_batch_norm"])
def test_fused_updates_train_as_keras_own_and_leave_no_traced_step(
    small: Splits, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On TensorFlow a pack compiles each large variable's update with XLA (one pass over
    the variable and its moments instead of a dozen kernels). Every variable compiled,
    the pack trains as with Keras' own update, and a pack that is not kept leaves none
    of its compiled functions behind."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only the TensorFlow backend runs an optimizer's update unfused")
    from seqsweep.trial import packed

    settings = StudySettings(epochs=2, batch_size=32, pack_size=4)
    if base == "adam_dropout":
        params = [{**p, "dense_units": 16} for p in _params(dropout=None)[:4]]
    else:
        params = _deep(dropout_rate=0.2)[:4]
    runs: dict[bool, list[TrialResult]] = {}
    for on in (False, True):
        monkeypatch.setattr(fused, "FUSE_MIN_SIZE", 1 if on else 10**12)
        packed._BUILT.clear()
        packed._ASKED.clear()
        compiled: list[tuple[int, int]] = []  # (updates compiled, variables) per pack

        def keep(model: Any, compiled: list[tuple[int, int]] = compiled) -> None:
            made = getattr(model.optimizer, "fused_updates", {})
            compiled.append((len(made), len(model.trainable_variables)))

        before = live_traces()
        runs[on] = _results(
            run_pack(params, [1, 2, 3, 4], small, settings, study_seed=5, keep=keep)
        )
        ((made, variables),) = compiled
        assert made == (variables if on else 0)
        assert not packed._BUILT and live_traces() == before
    for a, b in zip(runs[False], runs[True], strict=True):
        for ea, eb in zip(a.epochs, b.epochs, strict=True):
            assert eb.val_loss == pytest.approx(ea.val_loss, abs=1e-5)
            assert eb.val_accuracy == pytest.approx(ea.val_accuracy, abs=1e-3)


def test_split_members_names_each_members_metrics_in_a_history_and_an_evaluation() -> None:
    """A pack reports one vector per metric (a kernel a step, not two per member);
    split_members turns it into each member's ``m{k}_`` metrics, leaving the rest."""
    from models.packed import split_members

    history = {
        "loss": [3.0, 2.0],
        "member_loss": [np.array([1.0, 2.0]), np.array([0.5, 1.5])],
        "val_member_accuracy": [np.array([0.25, 0.75]), np.array([0.5, 1.0])],
    }
    assert split_members(history) == {
        "loss": [3.0, 2.0],
        "m0_loss": [1.0, 0.5],
        "m1_loss": [2.0, 1.5],
        "val_m0_accuracy": [0.25, 0.5],
        "val_m1_accuracy": [0.75, 1.0],
    }
    assert split_members({"loss": 1.0, "member_accuracy": np.array([0.5, 0.25])}) == {
        "loss": 1.0, "m0_accuracy": 0.5, "m1_accuracy": 0.25,
    }  # fmt: skip
