"""``export``: the best trial as a .keras file that loads and scores as recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.export import TOLERANCE
from seqsweep.dataset import split_dataset
from seqsweep.db import ResultStore
from seqsweep.settings import StudySettings
from tests.conftest import run_cli, write_tiny_csv

DATA = ["--data", "tiny.csv", "--target", "label", "--epochs", "2", "--batch-size", "16"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "SEQSWEEP_DB_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "SEQSWEEP_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'b.db'}",
    }


@pytest.mark.integration
@pytest.mark.slow
def test_exported_best_model_loads_and_matches_the_recorded_test_accuracy(tmp_path: Path) -> None:
    write_tiny_csv(tmp_path / "tiny.csv", rows=400)
    env = _env(tmp_path)
    ran = run_cli(
        "scheduler", "launch", "--trials", "3", "--local-workers", "1", "--seed", "5", *DATA,
        "--format", "json", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    best = json.loads(ran.stdout)["best"]

    exported = run_cli(
        "scheduler", "export", "--out", "best.keras", "--format", "json", cwd=tmp_path, env=env
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    result = json.loads(exported.stdout)
    assert result["trial"] == best["number"] and result["within_tolerance"] is True
    assert sorted(p.name for p in tmp_path.glob("*.keras")) == ["best.keras"], "no partial file"

    import keras

    model = keras.models.load_model(tmp_path / "best.keras")
    assert [type(layer).__name__ for layer in model.layers] == [
        "Dense",
        "Dropout",
        "Dense",
        "Dropout",
        "Dense",
    ]
    assert model.layers[0].units == best["params"]["dense_units"]
    store = ResultStore(env["SEQSWEEP_DB_URL"])
    study = store.require_study("default")
    settings = StudySettings.from_dict(study.settings)
    splits = split_dataset(
        store.load_dataset(study.dataset_hash),
        study.seed,
        settings.val_fraction,
        settings.test_fraction,
    )
    y_test = keras.utils.to_categorical(splits.y_test, splits.n_classes)
    scores = model.evaluate(splits.x_test, y_test, verbose=0, return_dict=True)
    assert abs(scores["accuracy"] - best["test_accuracy"]) <= TOLERANCE


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--out", "best.h5"], "--out best.h5: Keras saves models as .keras files"),
        (["--out", "nowhere/best.keras"], "folder nowhere does not exist"),
        (["--out", "best.keras"], "has no succeeded trial yet"),
        (["--out", "best.keras", "--trial", "1"], "--trial 1: only a succeeded trial"),
        (["--out", "best.keras", "--study", "nope"], "study 'nope' not found"),
    ],
)
def test_export_refuses_bad_input_in_one_line(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    env = _env(tmp_path)
    made = run_cli("scheduler", "launch", "--trials", "2", "--detach", cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    proc = run_cli("scheduler", "export", *args, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and fragment in proc.stderr, proc.stderr
    assert not list(tmp_path.rglob("*.keras"))
