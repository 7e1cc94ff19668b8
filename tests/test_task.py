"""Task and objective: regression in the target's units, the stored objective, the
``metrics`` column, and a results DB written before they existed."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from scheduler.data import load_dataset
from scheduler.options import LaunchOptions
from scheduler.report import format_report, study_report
from scheduler.sampling import sample
from scheduler.space import SearchSpace
from seqsweep.dataset import Dataset
from seqsweep.db import ResultStore, TrialResult
from seqsweep.errors import DataError
from seqsweep.settings import StudySettings
from seqsweep.trial import study_splits, train
from seqsweep.vocab import Task
from tests.conftest import REPO
from worker.tasks import _train_and_record

ASSET = REPO / "tests" / "assets" / "results_before_issue10.db"


def _housing(rows: int = 200) -> Dataset:
    """Prices around 300 (thousands), far from the standardized scale the network learns."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    price = 300 + 40 * x[:, 0] - 25 * x[:, 1] + rng.normal(0, 5, rows)
    return Dataset(x, price, ())


def test_auto_takes_a_many_valued_float_target_for_regression(tmp_path: Path) -> None:
    data = _housing()
    lines = ["a,b,c,price"] + [
        f"{a:.4f},{b:.4f},{c:.4f},{p:.3f}" for (a, b, c), p in zip(data.X, data.y, strict=True)
    ]
    (tmp_path / "housing.csv").write_text("\n".join(lines) + "\n")
    loaded = load_dataset(tmp_path / "housing.csv", "price")
    assert loaded.task is Task.REGRESSION and loaded.n_outputs == 1
    assert loaded.y == pytest.approx(data.y, abs=1e-3)
    settings = LaunchOptions().study_settings(loaded)
    assert (settings.task, settings.objective) == (Task.REGRESSION, "val_loss")
    # An explicit task keeps labels: a few distinct float values are classes ...
    few = ["a,b,c,price"] + [
        f"{a:.4f},{b:.4f},{c:.4f},{float(i % 3)}" for i, (a, b, c) in enumerate(data.X)
    ]
    (tmp_path / "few.csv").write_text("\n".join(few) + "\n")
    labels = load_dataset(tmp_path / "few.csv", "price", "classification")
    assert labels.task is Task.CLASSIFICATION and labels.n_classes == 3
    # ... but a float column with a class per row is refused, not trained at chance level.
    with pytest.raises(DataError, match="199 classes in 200 rows"):
        load_dataset(tmp_path / "housing.csv", "price", "classification")
    round_trip = Dataset.from_bytes(loaded.to_bytes())
    assert round_trip.task is Task.REGRESSION and round_trip.content_hash() == loaded.content_hash()


def test_regression_metrics_are_in_the_targets_units() -> None:
    data = _housing()
    settings = StudySettings(epochs=2, batch_size=16, task=Task.REGRESSION, objective="val_mae")
    splits = study_splits(data, 3, settings)
    assert abs(float(np.mean(splits.y_train))) < 1e-5  # learned standardized
    params = {"dense_units": 16, "n_layers": 2, "learning_rate": 1e-2}
    kept: list = []
    (result,) = train({0: params}, splits, settings, study_seed=3, keep=kept.append, keep_number=0)
    assert isinstance(result, TrialResult) and result.val_accuracy is None
    m = result.metrics
    assert m["val_rmse"] == pytest.approx(math.sqrt(m["val_loss"]))
    assert result.val_loss == m["val_loss"] and result.epochs[-1].val_loss == pytest.approx(
        m["val_loss"], rel=1e-5
    )
    # The kept model predicts prices; its errors are the recorded ones, in those units.
    x_val = splits.x_val
    y_val = splits.y_val * splits.y_std + splits.y_mean
    predicted = kept[0].predict(x_val, verbose=0)[:, 0]
    assert np.abs(predicted - y_val).mean() == pytest.approx(m["val_mae"], rel=1e-3)
    assert ((predicted - y_val) ** 2).mean() == pytest.approx(m["val_loss"], rel=1e-3)
    assert m["val_mae"] > 1.0  # prices, not standardized units (those would be below 1)


def test_a_regression_study_is_ranked_by_its_objective_and_reported(sqlite_url: str) -> None:
    store = ResultStore(sqlite_url)
    space = SearchSpace.from_dict(
        {"dense_units": 8, "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 3e-2}}
    )
    settings = StudySettings(epochs=2, batch_size=32, task=Task.REGRESSION, objective="val_mae")
    study, _ = store.create_study(
        "house", seed=5, fresh_seed=0, space=space.to_dict(), settings=settings.to_dict(),
        data=_housing(), trials=3, sample=lambda seed, n: sample(space, seed, n),
    )  # fmt: skip
    for number in range(3):
        claimed = store.claim(study.id, number, "test", lease_s=60)
        assert claimed is not None
        _train_and_record(store, [claimed])
    trials = store.get_trials(study.id)
    assert all(t.status == "succeeded" and t.metrics for t in trials)
    maes = sorted((t.metrics["val_mae"], t.number) for t in trials)  # type: ignore[index]
    report = study_report(store, "house")
    assert [t.number for t in report.top] == [n for _, n in maes]  # lowest MAE first
    best = report.as_dict()["best"]
    assert best["objective"] == {"name": "val_mae", "direction": "minimize", "value": maes[0][0]}
    assert set(best["metrics"]) == {
        f"{s}_{m}" for s in ("val", "test") for m in ("loss", "mae", "rmse")
    }
    assert best["val_accuracy"] is None and "val_loss" in best  # every key of before stays
    text = format_report(report)
    assert "top 3 by val_mae (minimized, ties: lower val_loss):" in text
    assert f"best trial: #{maes[0][1]}  val_loss=" in text and "  val_mae=" in text
    summary = store.study_summaries()[0].as_dict()
    assert summary["objective"]["name"] == "val_mae" and summary["best_trial"] == maes[0][1]


def test_a_db_from_before_issue_10_migrates_and_reports(tmp_path: Path) -> None:
    """A results DB written by the code before task and objective existed (a test asset)."""
    db = tmp_path / "old.db"
    shutil.copy(ASSET, db)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("0003",)
        query = "SELECT number, val_accuracy, val_loss FROM trials ORDER BY number"
        before = con.execute(query).fetchall()
    store = ResultStore(f"sqlite:///{db}")
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("0004",)
        columns = [row[1] for row in con.execute("PRAGMA table_info(trials)")]
        assert "metrics" in columns
        # The README's SQL still works on the old rows.
        assert con.execute(query).fetchall() == before
    report = study_report(store, "old")
    assert report.objective.metric == "val_accuracy" and report.task is Task.CLASSIFICATION
    best = min(before, key=lambda r: (-r[1], r[2], r[0]))  # ties: lower val_loss
    as_json = json.loads(json.dumps(report.as_dict()))
    assert as_json["best"]["number"] == best[0]
    assert as_json["best"]["objective"]["value"] == pytest.approx(best[1])
    assert as_json["best"]["metrics"]["val_accuracy"] == pytest.approx(best[1])
    assert store.study_summaries()[0].best_number == best[0]
