"""The Python API: ``seqsweep.launch`` and ``seqsweep.load_study``, in scripts and in Jupyter."""

from __future__ import annotations

import dataclasses
import os
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

import seqsweep
from scheduler.cli import launch_options, parser
from scheduler.options import LaunchOptions
from scheduler.report import study_report
from seqsweep.db import ResultStore
from seqsweep.errors import UsageError
from tests.conftest import REPO
from tests.test_store import _claim, _create, _result


def _study(url: str) -> ResultStore:
    """Study ``s``: trials 0-2 succeeded, 3 failed, 4 running, 5 queued."""
    store = ResultStore(url)
    study, _ = _create(store, 6, name="s")
    for number, acc in ((0, 0.7), (1, 0.9), (2, 0.8)):
        assert store.finish_trial(_claim(store, study.id, number, f"host:{number}"), _result(acc))
    assert store.fail_trial(_claim(store, study.id, 3, "host:3"), "ValueError: boom")
    _claim(store, study.id, 4, "host:4")
    return store


def test_load_study_gives_frozen_records_and_an_optuna_like_dataframe(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = _study(sqlite_url)
    study = seqsweep.load_study("s", db=sqlite_url)
    assert study.name == "s" and "running" in repr(study)
    assert study.best == store.top_trials(study.record.id, 1)[0]
    assert study.best is not None and study.best.number == 1
    assert [t.number for t in study.trials] == list(range(6))
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.trials[0].number = 9  # type: ignore[misc]

    df = study.trials_dataframe()
    names = ["dense_units", "dropout_rate1", "dropout_rate2", "learning_rate"]
    assert list(df.columns) == [
        "number", "value", "val_accuracy", "val_loss", "test_accuracy", "test_loss",
        "datetime_start", "datetime_complete", "duration", "duration_s",
        *(f"params_{n}" for n in names), "state", "attempts", "worker", "device", "error",
    ]  # fmt: skip
    assert list(df["state"]) == ["succeeded"] * 3 + ["failed", "running", "queued"]
    assert list(df["value"][:3]) == [0.7, 0.9, 0.8] and df["value"][3:].isna().all()
    for trial, row in zip(study.trials, df.itertuples(), strict=True):
        assert {n: getattr(row, f"params_{n}") for n in names} == trial.params
        assert row.attempts == trial.attempts
        assert row.worker == trial.worker or (pd.isna(row.worker) and trial.worker is None)
    assert str(df["datetime_start"].dt.tz) == str(df["datetime_complete"].dt.tz) == "UTC"
    assert df["datetime_start"][0] == pd.Timestamp(study.trials[0].started_at)
    assert df["duration"][0] == df["datetime_complete"][0] - df["datetime_start"][0]
    assert timedelta(0) <= df["duration"][0] < timedelta(minutes=1)
    assert pd.isna(df["datetime_complete"][4]) and pd.isna(df["datetime_start"][5])
    assert df["error"][3] == "ValueError: boom"

    assert study.report(top=2).as_dict() == study_report(store, "s", 2).as_dict()
    page = study.html(tmp_path / "s.html")
    assert page == tmp_path / "s.html" and "seqsweep report: s" in page.read_text()


def test_load_study_refuses_a_missing_db_or_study(tmp_path: Path, sqlite_url: str) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(UsageError, match=r"no results DB at .*nope.db: the file does not exist"):
        seqsweep.load_study("s", db=f"sqlite:///{missing}")
    assert not missing.exists()
    _study(sqlite_url)
    with pytest.raises(UsageError, match=r"study 'other' not found .* known studies: s"):
        seqsweep.load_study("other", db=sqlite_url)


def test_launch_takes_the_cli_flags_with_the_cli_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One place for defaults: the flags' defaults and the API's are the same options."""
    monkeypatch.chdir(tmp_path)
    from_cli = launch_options(parser().parse_args(["launch"]))
    assert from_cli == LaunchOptions.from_flags() == LaunchOptions()
    with pytest.raises(UsageError, match="unknown launch option 'trial'; the options are "):
        seqsweep.launch(trial=3)
    with pytest.raises(UsageError, match=r"--epochs must be an integer in \[1, 10000\], got 0"):
        seqsweep.launch(epochs=0)
    assert list(tmp_path.iterdir()) == [], "bad options write nothing"


def test_launch_detached_returns_the_report_as_it_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("SEQSWEEP_DB_URL", "SEQSWEEP_BROKER_URL"):
        monkeypatch.delenv(var, raising=False)
    report = seqsweep.launch(study="later", trials=3, seed=5, detach=True)
    assert (report.study, report.status, report.seed) == ("later", "running", 5)
    assert report.counts.queued == 3 and report.best is None
    assert (
        "study later: 3 trials (3 new, 3 queued, 3 sent to the broker)" in capsys.readouterr().out
    )
    assert seqsweep.load_study("later").record.seed == 5


def _readme_notebook() -> list[str]:
    """The README's notebook example, one string per ``# %%`` cell."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## In a notebook: the Python API", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    return [cell.strip() for cell in code.split("# %%") if cell.strip()]


@pytest.mark.integration
@pytest.mark.slow
def test_the_readme_notebook_runs_in_a_jupyter_kernel_with_a_widget_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each cell of the README's example runs in a real IPython kernel, as in Jupyter."""
    import nbclient
    import nbformat

    cells = _readme_notebook()
    assert cells[0].count("trials=20, epochs=5") == 1
    cells[0] = cells[0].replace("trials=20, epochs=5", "trials=2, epochs=1, local_workers=1")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    for var in ("SEQSWEEP_DB_URL", "SEQSWEEP_BROKER_URL"):
        monkeypatch.delenv(var, raising=False)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    launched, frame, last = (cell.outputs for cell in notebook.cells)
    widgets = [
        o for o in launched if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, f"no tqdm widget bar among {launched}"
    assert "'dense_units'" in launched[-1]["data"]["text/plain"]  # report.best.params, ...
    table = frame[-1]["data"]["text/html"]
    assert "params_learning_rate" in table and "succeeded" in table
    assert "ExportReport(study='notebook'" in last[-1]["data"]["text/plain"]
    assert (tmp_path / "notebook.html").stat().st_size > 100_000
    assert (tmp_path / "best.keras").exists()
    assert (
        seqsweep.load_study("notebook", db=f"sqlite:///{tmp_path / 'seqsweep.db'}").record.status
        == "completed"
    )
