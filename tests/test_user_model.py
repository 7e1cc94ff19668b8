"""``launch --model MODULE:FUNCTION``: the user's build function, checked by source hash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqsweep.dataset import Dataset
from seqsweep.db import TrialResult
from seqsweep.errors import TrialError, UsageError
from seqsweep.settings import StudySettings
from seqsweep.trial import study_splits, train
from seqsweep.trial.user_model import check_reference
from tests.conftest import REPO, run_cli, write_tiny_csv

#: The README's example: a wider first layer, then a stack that halves.
NETS = """\
import keras


def build(params, n_features, n_outputs, task):
    width = int(params["width"])
    layers = [keras.Input(shape=(n_features,))]
    for i in range(int(params["depth"])):
        layers.append(keras.layers.Dense(max(width // 2**i, 4), activation="relu"))
    regression = task == "regression"
    layers.append(keras.layers.Dense(n_outputs, activation=None if regression else "softmax"))
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.Adam(params["learning_rate"]),
        loss="mean_squared_error" if regression else "categorical_crossentropy",
        metrics=["mean_squared_error", "mean_absolute_error"] if regression else ["accuracy"],
    )
    return model


def broken(params, n_features, n_outputs, task):
    raise RuntimeError("width must be even")
"""
SPACE = (
    "width: {type: choice, values: [32, 64]}\n"
    "depth: {type: int, low: 1, high: 3}\n"
    "learning_rate: {type: loguniform, low: 1.0e-3, high: 1.0e-2}\n"
)


@pytest.fixture
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "usermods"
    folder.mkdir()
    (folder / "mynets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("mynets", None)


def _splits() -> object:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 4)).astype(np.float32)
    data = Dataset(x, (x[:, 0] > 0).astype(np.int64), ("no", "yes"))
    return study_splits(data, 1, StudySettings())


def test_a_build_function_trains_and_its_failures_are_the_trials(nets: Path) -> None:
    sha = check_reference("mynets:build")
    params = {"width": 32, "depth": 3, "learning_rate": 1e-2}
    settings = StudySettings(epochs=1, batch_size=16, model="mynets:build", model_sha256=sha)
    kept: list = []
    (result,) = train(
        {0: params}, _splits(), settings, study_seed=1, keep=kept.append, keep_number=0
    )
    assert isinstance(result, TrialResult) and result.pack is None  # user functions never pack
    assert [layer.units for layer in kept[0].layers] == [32, 16, 8, 2]

    broken = StudySettings(epochs=1, batch_size=16, model="mynets:broken", model_sha256=sha)
    with pytest.raises(TrialError, match="--model mynets:broken raised RuntimeError: width must"):
        train({0: params}, _splits(), broken, study_seed=1)
    (nets / "mynets.py").write_text(NETS + "\n# edited on this worker\n")
    with pytest.raises(TrialError, match=r"mynets\.py differs from the launch's copy"):
        train({0: params}, _splits(), settings, study_seed=1)


def test_bad_references_are_one_line() -> None:
    with pytest.raises(UsageError, match="must be MODULE:FUNCTION"):
        check_reference("mynets.build")
    with pytest.raises(UsageError, match="module no_such_module_10 not found here"):
        check_reference("no_such_module_10:build")


@pytest.mark.integration
def test_a_build_function_on_redis_and_postgresql_with_a_separate_worker(
    tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    """The module lives in its own folder on PYTHONPATH of launch and of a separate
    `python -m worker`; a launch that sees another copy of it gets failed trials that
    name the file."""
    mine, theirs, home = tmp_path / "mine", tmp_path / "theirs", tmp_path / "home"
    for folder in (mine, theirs, home):
        folder.mkdir()
    (mine / "mynets.py").write_text(NETS)
    (theirs / "mynets.py").write_text(NETS.replace("// 2**i", "// 3**i"))
    write_tiny_csv(home / "tiny.csv")
    (home / "space.yaml").write_text(SPACE)
    env = {
        **os.environ,
        "SEQSWEEP_DB_URL": pg_url,
        "SEQSWEEP_BROKER_URL": redis_url,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(mine)]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker", "--concurrency", "1"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    flags = [
        "--model", "mynets:build", "--space", "space.yaml", "--data", "tiny.csv",
        "--target", "label", "--epochs", "1", "--local-workers", "0", "--db", pg_url,
        "--broker", redis_url, "--format", "json",
    ]  # fmt: skip
    try:
        ok = run_cli("scheduler", "launch", "--trials", "3", "--study", "own", *flags,
                     cwd=home, env={"PYTHONPATH": str(mine)}, timeout=300)  # fmt: skip
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")
        assert ok.returncode == 0, ok.stderr + worker_log
        report = json.loads(ok.stdout)
        assert report["counts"]["succeeded"] == 3
        assert set(report["best"]["params"]) == {"width", "depth", "learning_rate"}
        other = run_cli("scheduler", "launch", "--trials", "1", "--study", "other", *flags,
                        cwd=home, env={"PYTHONPATH": str(theirs)}, timeout=300)  # fmt: skip
        assert other.returncode == 1, other.stderr
        assert json.loads(other.stdout)["counts"]["failed"] == 1
        out = run_cli("scheduler", "status", "--study", "other", "--db", pg_url, cwd=home)
        assert "mynets.py differs from the launch's copy" in out.stdout, out.stdout
        assert worker.poll() is None  # the failure was the trial's, not the worker's
        exported = run_cli("scheduler", "export", "--study", "own", "--out", "own.keras",
                           "--db", pg_url, cwd=home, env={"PYTHONPATH": str(mine)})  # fmt: skip
        assert exported.returncode == 0 and "within the tolerance" in exported.stdout, (
            exported.stdout + exported.stderr
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
