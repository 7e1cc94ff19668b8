"""``export-optuna``: a seqsweep study in an Optuna storage, read back with Optuna itself,
kept in step while it runs, and shown by optuna-dashboard in headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from scheduler.cli import main
from scheduler.data import synthetic_dataset
from scheduler.sampling import sample
from scheduler.space import SearchSpace
from seqsweep.db import ClaimedTrial, EpochRecord, ResultStore, TrialRecord, TrialResult
from seqsweep.settings import StudySettings
from seqsweep.urls import mask_url, sqlite_path
from tests.conftest import chromium_page
from tests.processes import Proc, child_env, free_port, wait_until

#: Every kind of distribution a space has, each as Optuna must see it.
SPACE = SearchSpace.from_dict(
    {
        "dense_units": {"type": "choice", "values": [16, 32, 64]},
        "dropout_rate1": {"type": "uniform", "low": 0.0, "high": 0.5},
        "dropout_rate2": 0.1,
        "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
        "epochs": {"type": "int", "low": 1, "high": 6, "step": 2},
        "batch_size": {"type": "int", "low": 8, "high": 64, "log": True},
    }
)
DISTRIBUTIONS = {
    "dense_units": CategoricalDistribution((16, 32, 64)),
    "dropout_rate1": FloatDistribution(0.0, 0.5),
    "dropout_rate2": CategoricalDistribution((0.1,)),
    "learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
    "epochs": IntDistribution(1, 5, step=2),  # 6 is off the step grid: no trial reaches it
    "batch_size": IntDistribution(8, 64, log=True),
}
STATES = {
    "succeeded": TrialState.COMPLETE,
    "failed": TrialState.FAIL,
    "cancelled": TrialState.FAIL,
    "running": TrialState.RUNNING,
    "queued": TrialState.WAITING,
}


def _study(url: str, name: str = "s", trials: int = 10, succeed: int = 6) -> ResultStore:
    """``succeed`` trials succeeded (3 epochs each, on 3 workers), one failed, one running."""
    store = ResultStore(url)
    study, _ = store.create_study(
        name,
        seed=1,
        fresh_seed=2,
        space=SPACE.to_dict(),
        settings=StudySettings(epochs=1).to_dict(),
        data=synthetic_dataset(n_rows=60),
        trials=trials,
        sample=lambda s, i: sample(SPACE, s, i),
    )
    for number in range(succeed):
        _succeed(store, study.id, number)
    failed = store.claim(study.id, succeed, "host:1", lease_s=60)
    assert failed is not None and store.fail_trial(failed, "ValueError: boom")
    store.claim(study.id, succeed + 1, "host:2", lease_s=60)
    return store


def _succeed(store: ResultStore, study_id: int, number: int) -> None:
    claimed = store.claim(study_id, number, f"host:{number % 3}", lease_s=60)
    assert claimed is not None
    acc = 0.9 + 0.05 * math.log10(claimed.params["learning_rate"])
    epochs = tuple(
        EpochRecord(e, 1 - acc * e / 3, acc * e / 3, 1.1 - acc * e / 3, acc * e / 3)
        for e in (1, 2, 3)
    )
    assert store.finish_trial(
        claimed, TrialResult(1 - acc, acc, 0.9 - acc, acc - 0.01, 0.5, "cpu", epochs)
    )


def _local(stamp: datetime | None) -> datetime | None:
    return None if stamp is None else stamp.astimezone().replace(tzinfo=None)


def _check(store: ResultStore, storage: str, name: str = "s") -> list[optuna.trial.FrozenTrial]:
    """Load the study back with Optuna and compare every trial with seqsweep's record."""
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.metric_names == ["val_accuracy"]
    record = store.require_study(name)
    assert study.user_attrs["seed"] == record.seed and study.user_attrs["space"] == record.space
    ours: list[TrialRecord] = store.get_trials(record.id)
    theirs = study.get_trials(deepcopy=False)
    assert [t.user_attrs["seqsweep_number"] for t in theirs] == [t.number for t in ours]
    for mine, got in zip(ours, theirs, strict=True):
        assert got.number == mine.number
        assert got.state == STATES[mine.status], mine
        assert got.params == mine.params
        assert got.distributions == DISTRIBUTIONS
        attrs = got.user_attrs
        assert (attrs["status"], attrs["attempts"]) == (mine.status, mine.attempts)
        assert attrs.get("worker") == mine.worker and attrs.get("error") == mine.error
        if mine.status == "succeeded":
            assert got.value == mine.val_accuracy
            epochs = store.epochs(mine.id)
            assert got.intermediate_values == {e.epoch: e.val_accuracy for e in epochs}
            assert attrs["test_accuracy"] == mine.test_accuracy
            assert (attrs["val_loss"], attrs["device"]) == (mine.val_loss, "cpu")
        else:
            assert got.value is None and got.intermediate_values == {}
        if got.state.is_finished():
            assert got.datetime_complete is not None and got.datetime_start is not None
        assert attrs.get("started_at") == (mine.started_at and mine.started_at.isoformat())
    return theirs


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An Optuna storage of its own: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_every_trial_reaches_optuna_as_seqsweep_recorded_it(
    sqlite_url: str, storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _study(sqlite_url)
    args = ["export-optuna", "--db", sqlite_url, "--study", "s", "--storage", storage]
    assert main(args) == 0
    shown = mask_url(storage)
    assert capsys.readouterr().out == (
        f"study s (running): 10 trials in {shown} (10 added, 0 updated); "
        f"view them with optuna-dashboard {shown}\n"
    )
    theirs = _check(store, storage)
    if (path := sqlite_path(storage)) is not None:  # as private as the results DB
        assert path.stat().st_mode & 0o777 == 0o600
    ours = {t.number: t for t in store.get_trials(store.require_study("s").id)}
    for got in theirs:  # a trial that was exported finished carries its exact times
        if got.state.is_finished():
            mine = ours[got.number]
            assert got.datetime_start == _local(mine.started_at)
            assert got.datetime_complete == _local(mine.finished_at)

    # Idempotent: a second pass adds nothing and changes nothing.
    assert main([*args, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "study": "s", "storage": shown, "status": "running", "trials": 10,
        "created": 0, "updated": 0,
    }  # fmt: skip

    # The study goes on: a queued trial finishes, another starts, then the running one ends.
    study_id = store.require_study("s").id
    _succeed(store, study_id, 8)
    store.claim(study_id, 9, "host:1", lease_s=60)
    assert main([*args, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["updated"] == 2  # 8 waiting -> complete, 9 running
    _check(store, storage)
    _finish_running(store, "s", 7)
    assert main([*args, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["updated"] == 1
    assert _check(store, storage)[7].state == TrialState.COMPLETE


def test_a_cancelled_study_and_bad_input(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _study(sqlite_url, name="c", trials=4, succeed=1)
    store.cancel(store.require_study("c").id)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert main(["export-optuna", "--db", sqlite_url, "--study", "c", "--storage", storage]) == 0
    assert "study c (cancelled): 4 trials" in capsys.readouterr().out
    theirs = _check(store, storage, "c")
    assert [t.state for t in theirs] == [
        TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL
    ]  # fmt: skip
    assert theirs[3].user_attrs["status"] == "cancelled"

    cases = [
        (["--storage", sqlite_url], "is the results DB itself; Optuna's tables would collide"),
        (["--storage", "nonsense"], "--storage 'nonsense': not a database URL"),
        (["--storage", storage, "--watch", "--interval", "0.01"], "--interval must be in [0.5"),
        (["--storage", storage, "--study", "nope"], "study 'nope' not found"),
    ]
    for flags, fragment in cases:
        assert main(["export-optuna", "--db", sqlite_url, "--study", "c", *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], (flags, err)


def test_without_optuna_it_says_how_to_install_it(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _study(sqlite_url, trials=2, succeed=0)
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    assert main(["export-optuna", "--db", sqlite_url, "--study", "s", "--storage", storage]) == 2
    assert capsys.readouterr().err == (
        'error: export-optuna needs Optuna: pip install "seqsweep[optuna]"\n'
    )
    assert not (tmp_path / "o.db").exists()


def _watch(tmp_path: Path, db: str, storage: str, study: str) -> Proc:
    args = ["export-optuna", "--db", db, "--study", study, "--storage", storage, "--watch"]
    return Proc(
        [sys.executable, "-m", "scheduler", *args, "--interval", "0.5", "--format", "json"],
        tmp_path,
        child_env(),
        tmp_path / f"watch-{study}.log",
    )


@pytest.mark.integration
@pytest.mark.slow
def test_watch_follows_the_study_until_it_completes_and_stops_on_ctrl_c(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = _study(sqlite_url, trials=8, succeed=6)  # 6 succeeded, 1 failed, 1 running
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    watch = _watch(tmp_path, sqlite_url, storage, "s")
    try:
        wait_until(lambda: '"created": 8' in watch.output(), 60, "the first pass")
        # The running trial's worker records its result, which completes the study.
        _finish_running(store, "s", 7)
        assert store.require_study("s").status == "completed"
        assert watch.wait(60) == 0, watch.output()
    finally:
        watch.stop()
    passes = [json.loads(line) for line in watch.output().splitlines() if line.startswith("{")]
    assert passes[0]["created"] == 8 and passes[-1]["status"] == "completed"
    assert sum(p["updated"] for p in passes) == 1
    theirs = _check(store, storage)
    assert theirs[7].state == TrialState.COMPLETE

    # A study that runs on: Ctrl-C is how a watch ends, with exit code 0.
    other = _study(sqlite_url, name="forever", trials=3, succeed=1)
    watch = _watch(tmp_path, sqlite_url, storage, "forever")
    try:
        wait_until(lambda: '"created": 3' in watch.output(), 60, "the first pass")
        watch.popen.send_signal(signal.SIGINT)
        assert watch.wait(30) == 0
    finally:
        watch.stop()
    assert "stopped watching; run the same command again to go on" in watch.output()
    assert other.require_study("forever").status == "running"


def _finish_running(store: ResultStore, name: str, number: int) -> None:
    """Record the result of trial ``number``, claimed by ``_study``, as its worker would."""
    record = store.require_study(name)
    [trial] = store.get_trials(record.id, [number])
    claimed = ClaimedTrial(
        trial_id=trial.id, study_id=record.id, study_name=name, number=number,
        params=trial.params, seed=record.seed, settings=record.settings,
        dataset_hash=record.dataset_hash, attempt=trial.attempts,
    )  # fmt: skip
    epochs = (EpochRecord(1, 0.5, 0.7, 0.6, 0.7), EpochRecord(2, 0.4, 0.8, 0.5, 0.8))
    assert store.finish_trial(claimed, TrialResult(0.5, 0.8, 0.5, 0.79, 0.3, "cpu", epochs))


@pytest.mark.integration
@pytest.mark.slow
def test_optuna_dashboard_shows_the_exported_study_offline(sqlite_url: str, tmp_path: Path) -> None:
    """optuna-dashboard, on loopback, draws the study; Chromium may fetch nothing else."""
    store = _study(sqlite_url, trials=24, succeed=20)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert main(["export-optuna", "--db", sqlite_url, "--study", "s", "--storage", storage]) == 0
    port = free_port()
    # The command the README gives, installed beside this Python by the dev extra.
    command = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert command is not None, "pip install -e '.[dev]' installs optuna-dashboard"
    dashboard = Proc(
        [command, storage, "--host", "127.0.0.1", "--port", str(port)],
        tmp_path,
        child_env(),
        tmp_path / "dashboard.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/api/studies"), 60, "optuna-dashboard", every=0.5)
        with chromium_page(allowed=url, width=1400) as (page, problems):
            page.goto(f"{url}/dashboard/studies/1", wait_until="networkidle")
            # The page parses a 2 MB bundle first: slow on a loaded machine.
            page.wait_for_selector("#plot-history .scatterlayer .point", timeout=120_000)
            page.wait_for_timeout(1000)
            drawn = page.evaluate(
                """() => Object.fromEntries(['plot-history', 'graph-intermediate-values']
                  .map(id => [id, document.querySelectorAll(
                    `#${id} .scatterlayer .point`).length]))"""
            )
            text = page.inner_text("body")
            page.screenshot(path=str(tmp_path / "optuna-dashboard.png"), full_page=True)
    finally:
        dashboard.stop()
    assert problems == []
    best = store.top_trials(store.require_study("s").id, 1)[0]
    assert f"Best Trial (number={best.number})" in text
    assert drawn == {"plot-history": 20, "graph-intermediate-values": 20 * 3}
    assert (tmp_path / "optuna-dashboard.png").stat().st_size > 50_000


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False
