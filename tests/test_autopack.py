"""``--pack-size auto``: the choice on hand-made timings, the setting, and one real run."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from seqsweep.errors import UsageError
from seqsweep.settings import AUTO_PACK_CANDIDATES, StudySettings
from seqsweep.trial import autopack
from seqsweep.trial.autopack import auto_pack_size, choose_pack_size
from tests.conftest import run_cli, write_tiny_csv


def _per_member(times: dict[int, float]) -> dict[int, float]:
    """Whole-step seconds from per-member-step seconds, which read more easily."""
    return {size: t * size for size, t in times.items()}


@pytest.mark.parametrize(
    ("per_member", "chosen"),
    [
        # A GPU: the step costs the same until the matmuls fill the device at 64.
        ({1: 1.0, 4: 0.25, 16: 0.0625, 64: 0.016, 256: 0.0155}, 64),
        # A CPU: the step is mostly overhead up to 4, then arithmetic.
        ({1: 1.0, 4: 0.3, 16: 0.28, 64: 0.27}, 4),
        # Still falling at the largest: the largest.
        ({1: 1.0, 4: 0.5, 16: 0.2, 64: 0.1, 256: 0.05}, 256),
        # A gain of less than 10%: the smaller size.
        ({1: 1.0, 4: 0.95}, 1),
        # Slower per member at once: packing does not pay.
        ({1: 1.0, 4: 1.2}, 1),
        ({16: 0.5}, 16),
    ],
)
def test_the_smallest_size_past_which_a_member_step_stops_falling(
    per_member: dict[int, float], chosen: int
) -> None:
    assert choose_pack_size(_per_member(per_member), min_gain=0.10) == chosen


def test_the_choice_needs_a_measurement() -> None:
    with pytest.raises(ValueError, match="no pack size"):
        choose_pack_size({})


def test_the_sweep_stops_once_a_size_no_longer_pays_and_is_kept_per_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(autopack, "_CHOSEN", {})
    per_member = {1: 1.0, 4: 0.3, 16: 0.29, 64: 0.01, 256: 0.001}  # 64 is never reached
    timed: list[int] = []

    def step(size: int) -> float:
        timed.append(size)
        return per_member[size] * size

    params = {"dense_units": 64, "dropout_rate1": 0.1, "dropout_rate2": 0.1,
              "learning_rate": 1e-3}  # fmt: skip
    settings = StudySettings(pack_size="auto")
    assert auto_pack_size(params, None, settings, step_time=step, device="cpu:0") == 4  # type: ignore[arg-type]
    assert timed == [1, 4, 16]
    other_rates = {**params, "learning_rate": 1e-2}  # the same shape: no new measurement
    assert auto_pack_size(other_rates, None, settings, step_time=step, device="cpu:0") == 4  # type: ignore[arg-type]
    assert timed == [1, 4, 16]


def test_a_size_the_device_cannot_hold_ends_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autopack, "_CHOSEN", {})

    def step(size: int) -> float:
        if size >= 64:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return 1.0  # the whole step costs the same: each larger pack pays

    params = {"dense_units": 512, "dropout_rate1": 0.0, "dropout_rate2": 0.0,
              "learning_rate": 1e-3}  # fmt: skip
    chosen = auto_pack_size(
        params, None, StudySettings(pack_size="auto"), step_time=step, device="cpu:0"
    )  # type: ignore[arg-type]
    assert chosen == 16

    def broken(size: int) -> float:
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(autopack, "_CHOSEN", {})
    with pytest.raises(RuntimeError, match="a bug"):
        auto_pack_size(
            params, None, StudySettings(pack_size="auto"), step_time=broken, device="cpu:0"
        )  # type: ignore[arg-type]


def test_auto_is_a_setting_stored_as_the_word() -> None:
    settings = StudySettings(pack_size="auto")
    assert settings.to_dict()["pack_size"] == "auto"
    assert StudySettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    for bad in ("Auto", "0", 0, 257, True, 1.5):
        with pytest.raises(
            UsageError, match=r"--pack-size must be auto or an integer in \[1, 256\]"
        ):
            StudySettings(pack_size=bad)  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.slow
def test_a_study_with_pack_size_auto_packs_by_the_measured_size(tmp_path: Path) -> None:
    write_tiny_csv(tmp_path / "tiny.csv")
    # One shape, so one measurement: the rates differ, the network does not.
    (tmp_path / "one.yaml").write_text(
        "dense_units: 32\ndropout_rate1: 0.0\ndropout_rate2: 0.0\n"
        "learning_rate: {type: loguniform, low: 1.0e-3, high: 1.0e-2}\n"
    )
    proc = run_cli(
        "scheduler", "launch", "--trials", "4", "--local-workers", "1", "--pack-size", "auto",
        "--space", "one.yaml", "--data", "tiny.csv", "--target", "label", "--epochs", "1",
        "--batch-size", "16", "--study", "auto", "--format", "json", cwd=tmp_path,
    )  # fmt: skip
    log = (tmp_path / "seqsweep-workers.log").read_text()
    assert proc.returncode == 0, proc.stderr + log
    assert json.loads(proc.stdout)["counts"]["succeeded"] == 4
    chosen = [int(n) for n in re.findall(r"--pack-size auto: (\d+) on cpu", log)]
    assert len(chosen) == 1 and chosen[0] in AUTO_PACK_CANDIDATES, log
    with sqlite3.connect(tmp_path / "seqsweep.db") as db:
        (stored,) = db.execute("SELECT settings FROM studies WHERE name = 'auto'").fetchone()
        packs = [json.loads(p) for (p,) in db.execute("SELECT pack FROM trials")]
    assert json.loads(stored)["pack_size"] == "auto"
    assert all(p is None or len(p) <= chosen[0] for p in packs)
