"""A trial's FLOPs, the heaviest-first sending order and the cap on one pack's cost."""

from __future__ import annotations

from typing import Any

from scheduler.data import synthetic_dataset
from scheduler.enqueue import send_order
from seqsweep.settings import PACK_SHARE_OF_QUEUE, PACK_UNSPLIT_FLOPS, StudySettings
from seqsweep.trial.cost import (
    DataShape,
    forward_flops,
    heaviest_first,
    pack_budget,
    pack_positions,
    trial_flops,
)

SETTINGS = StudySettings(epochs=10, batch_size=32, pack_size=32)
#: The problem of bench/throughput.py: 5 features, 2 classes, 8,000 training rows.
BENCH = DataShape(n_features=5, n_outputs=2, n_train=8000, n_val=2667, n_test=2667)


def _trial(units: int, lr: float = 1e-3) -> dict[str, Any]:
    return {"dense_units": units, "dropout_rate1": 0.1, "dropout_rate2": 0.2, "learning_rate": lr}


def test_forward_flops_count_two_per_weight_of_every_dense_matmul() -> None:
    # 5 -> 8 -> 8 -> 2: 40 + 64 + 16 weights, a multiply and an add each
    assert forward_flops((8, 8), 5, 2) == 2 * (5 * 8 + 8 * 8 + 8 * 2)


def test_trial_flops_are_three_forwards_per_training_row_and_one_per_evaluated_row() -> None:
    data = DataShape(n_features=5, n_outputs=2, n_train=100, n_val=30, n_test=20)
    f = forward_flops((8, 8), 5, 2)
    assert trial_flops(_trial(8), SETTINGS, data) == 10 * (3 * f * 100 + f * 30) + f * 20
    # a trial's own epochs count, not the study's
    assert (
        trial_flops({**_trial(8), "epochs": 2}, SETTINGS, data)
        == 2 * (3 * f * 100 + f * 30) + f * 20
    )
    deep = {"n_layers": 3, "dense_units1": 16, "dense_units2": 8, "dense_units3": 4,
            "dropout_rate": 0.0, "learning_rate": 1e-3}  # fmt: skip
    g = forward_flops((16, 8, 4), 5, 2)
    assert g == 2 * (5 * 16 + 16 * 8 + 8 * 4 + 4 * 2)
    assert trial_flops(deep, SETTINGS, data) == 10 * (3 * g * 100 + g * 30) + g * 20


def test_a_512_unit_trial_of_the_benchmark_is_about_143_gflop() -> None:
    assert 140e9 < trial_flops(_trial(512), SETTINGS, BENCH) < 145e9


def test_the_data_shape_follows_the_studys_split() -> None:
    shape = DataShape.of_rows(5, 2, 13_334, StudySettings(val_fraction=0.2, test_fraction=0.2))
    assert shape == BENCH


def test_heaviest_trials_are_sent_first_and_equal_costs_keep_number_order() -> None:
    trials = {0: _trial(32), 1: _trial(512), 2: _trial(64), 3: _trial(512, 1e-2), 4: _trial(256)}
    assert heaviest_first(trials, SETTINGS, BENCH) == [1, 3, 4, 2, 0]


def test_launch_orders_built_in_networks_and_leaves_a_users_build_function_alone() -> None:
    data = synthetic_dataset(n_rows=200)
    order = send_order(StudySettings(), data)
    assert order is not None
    assert order({5: _trial(32), 7: _trial(128), 6: _trial(32)}) == [7, 5, 6]
    assert send_order(StudySettings(model="mine.py:build"), data) is None


def test_a_heavy_shape_takes_at_most_its_share_of_the_queue() -> None:
    lead = _trial(512)
    queued = [_trial(512, lr) for lr in (1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 7e-3)]
    one = trial_flops(lead, SETTINGS, BENCH)
    assert 8 * one // PACK_SHARE_OF_QUEUE > PACK_UNSPLIT_FLOPS  # the cap binds here
    picked = pack_positions(lead, queued, SETTINGS, BENCH, limit=31)
    assert picked == list(range(8 // PACK_SHARE_OF_QUEUE - 1))  # the lead + 3 of 8
    # the next worker's lead, with the rest queued: again its share of what is left
    rest = queued[len(picked) + 1 :]
    again = pack_positions(queued[len(picked)], rest, SETTINGS, BENCH, limit=31)
    assert len(again) + 1 == max(1, (len(rest) + 1) // PACK_SHARE_OF_QUEUE)


def test_light_trials_queued_behind_count_toward_the_share_and_other_shapes_are_skipped() -> None:
    lead = _trial(512)
    queued = [_trial(32), _trial(512), _trial(64), _trial(512), _trial(512), _trial(32)]
    picked = pack_positions(lead, queued, SETTINGS, BENCH, limit=31)
    assert all(queued[i]["dense_units"] == 512 for i in picked)
    total = sum(trial_flops(p, SETTINGS, BENCH) for p in [lead, *queued])
    taken = sum(trial_flops(p, SETTINGS, BENCH) for p in [lead, *(queued[i] for i in picked)])
    assert taken <= pack_budget(total, trial_flops(lead, SETTINGS, BENCH))
    assert picked == [1]  # two of four 512s: half the queue's FLOPs, the light ones included


def test_a_light_pack_is_never_split_and_the_pack_size_still_limits() -> None:
    queued = [_trial(64, 1e-3 * (i + 1)) for i in range(30)]
    assert trial_flops(_trial(64), SETTINGS, BENCH) * 31 < PACK_UNSPLIT_FLOPS
    assert pack_positions(_trial(64), queued, SETTINGS, BENCH, limit=31) == list(range(30))
    assert pack_positions(_trial(64), queued, SETTINGS, BENCH, limit=20) == list(range(20))
    assert pack_positions(_trial(64), queued, SETTINGS, BENCH, limit=0) == []


def test_a_lead_heavier_than_its_share_still_trains() -> None:
    assert pack_budget(queued_flops=10, lead_flops=PACK_UNSPLIT_FLOPS * 5) == PACK_UNSPLIT_FLOPS * 5
    assert pack_positions(_trial(512), [], SETTINGS, BENCH, limit=31) == []
