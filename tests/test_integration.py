"""End to end with real processes: the scheduler CLI, Celery workers, a broker and a DB.

No eager mode and no mocks: workers are separate OS processes that import
TensorFlow themselves, and every assertion reads the results DB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tests.conftest import REPO, run_cli, write_hostile_modules, write_tiny_csv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAUNCH = [
    "--data",
    "tiny.csv",
    "--target",
    "label",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--seed",
    "7",
    "--study",
    "e2e",
    "--format",
    "json",
]


def _rows(db_url: str, sql: str) -> list[tuple]:
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
    finally:
        engine.dispose()


def _check_study(db_url: str, report: dict, n: int) -> None:
    """Every trial ran exactly once, with epochs, and the report agrees with the DB."""
    trials = _rows(
        db_url,
        "SELECT t.number, t.status, t.attempts, t.worker, t.device, "
        "t.val_accuracy, t.test_accuracy FROM trials t JOIN studies s "
        "ON s.id = t.study_id WHERE s.name = 'e2e' ORDER BY t.number",
    )
    assert [t[0] for t in trials] == list(range(n))
    assert all(t[1] == "succeeded" and t[2] == 1 for t in trials), trials
    assert all(t[3] and t[4] == "cpu" for t in trials)
    assert all(0 <= t[5] <= 1 and 0 <= t[6] <= 1 for t in trials)
    epochs = _rows(db_url, "SELECT count(*) FROM trial_epochs")
    assert epochs == [(n,)]  # one epoch per trial, no duplicates

    assert report["study"] == "e2e"
    assert report["counts"] == {
        "total": n,
        "succeeded": n,
        "pruned": 0,
        "failed": 0,
        "running": 0,
        "queued": 0,
        "cancelled": 0,
    }
    best_in_db = _rows(
        db_url,
        "SELECT number FROM trials ORDER BY val_accuracy DESC, val_loss ASC, number ASC LIMIT 1",
    )[0][0]
    assert report["best"]["number"] == best_in_db
    assert set(report["best"]["params"]) == {
        "dense_units",
        "dropout_rate1",
        "dropout_rate2",
        "learning_rate",
    }
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss"):
        assert isinstance(report["best"][key], float)
    best = dict(report["best"])
    objective, metrics = best.pop("objective"), best.pop("metrics")
    assert report["top"][0] == best  # best is the first row, with the objective and metrics
    assert objective == {
        "name": "val_accuracy",
        "direction": "maximize",
        "value": best["val_accuracy"],
    }
    assert metrics == {
        m: best[m] for m in ("val_accuracy", "val_loss", "test_accuracy", "test_loss")
    }


def test_embedded_default_end_to_end(tmp_path: Path) -> None:
    """No server: SQLite results, the SQLite broker and local workers started by launch.

    From a user's project folder that holds its own ``worker.py`` and ``models.py``:
    the local workers must import seqsweep's (see tests/test_names.py for the control).
    """
    write_tiny_csv(tmp_path / "tiny.csv")
    markers = write_hostile_modules(tmp_path)
    proc = run_cli(
        "scheduler", "launch", "--trials", "4", "--local-workers", "2", *LAUNCH, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr + _log(tmp_path / "seqsweep-workers.log")
    db_url = f"sqlite:///{tmp_path / 'seqsweep.db'}"
    assert (tmp_path / "seqsweep-broker.db").exists()
    _check_study(db_url, json.loads(proc.stdout), 4)
    params_before = _rows(db_url, "SELECT number, params FROM trials ORDER BY number")

    # A larger --trials extends the study: only the missing numbers are added and run.
    again = run_cli(
        "scheduler", "launch", "--trials", "6", "--local-workers", "1", *LAUNCH, cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert "(2 new, 2 queued, 2 sent to the broker)" in again.stderr
    _check_study(db_url, json.loads(again.stdout), 6)
    assert (
        _rows(db_url, "SELECT number, params FROM trials WHERE number < 4 ORDER BY number")
        == params_before
    )

    table = run_cli("scheduler", "report", "--study", "e2e", cwd=tmp_path)
    assert table.returncode == 0
    last = table.stdout.strip().splitlines()
    best = json.loads(again.stdout)["best"]
    assert last[-2].startswith(f"best trial: #{best['number']} ")
    assert last[-1].startswith("best params: dense_units=")

    # The README's SQL for the best trial gives the same answer as the reporter.
    assert _readme_query(db_url, "sqlite")[0] == best["number"]
    assert not any((tmp_path / m).exists() for m in markers), "the user's modules were imported"


def _readme_query(db_url: str, dialect: str) -> tuple:
    """Run the README's best-trial query for ``dialect`` against study e2e."""
    readme = (REPO / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```sql")[1:]]
    [sql] = [b for b in blocks if ("json_extract" in b) == (dialect == "sqlite")]
    rows = _rows(db_url, sql.replace("'default'", "'e2e'").strip().rstrip(";"))
    assert len(rows) == 1
    return rows[0]


def test_trial_past_its_time_limit_is_failed_and_the_study_goes_on(tmp_path: Path) -> None:
    """Celery's soft time limit stops the trial; the failure is recorded with its reason."""
    proc = run_cli(
        "scheduler",
        "launch",
        "--trials",
        "1",
        "--local-workers",
        "1",
        "--epochs",
        "500",
        "--trial-timeout",
        "3",
        "--study",
        "slow",
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert proc.returncode == 1  # no trial succeeded: said on stderr, not a traceback
    assert "every trial failed" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert report["counts"]["failed"] == 1 and report["best"] is None
    db_url = f"sqlite:///{tmp_path / 'seqsweep.db'}"
    [(status, error)] = _rows(db_url, "SELECT status, error FROM trials")
    assert status == "failed" and "time limit exceeded" in error


@pytest.fixture
def remote_workers(tmp_path: Path, redis_url: str, pg_url: str) -> Iterator[dict[str, str]]:
    """Two workers in their own working directory: one `python -m worker`, one plain celery."""
    home = tmp_path / "worker-home"
    home.mkdir()
    env = {
        **os.environ,
        "SEQSWEEP_DB_URL": pg_url,
        "SEQSWEEP_BROKER_URL": redis_url,
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    commands = [
        [sys.executable, "-m", "worker", "--concurrency", "1", "--loglevel", "INFO"],
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "--hostname",
            "plain@%h",
        ],
    ]
    procs = []
    for i, command in enumerate(commands):
        log = open(home / f"worker{i}.log", "wb")  # noqa: SIM115 - closed below
        procs.append(
            (
                subprocess.Popen(
                    command,
                    cwd=home,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                log,
            )
        )
    yield {"db": pg_url, "broker": redis_url, "home": str(home)}
    for proc, _ in procs:
        proc.send_signal(signal.SIGTERM)
    for proc, log in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_redis_and_postgresql_with_separate_workers(
    tmp_path: Path, remote_workers: dict[str, str]
) -> None:
    scheduler_home = tmp_path / "scheduler-home"
    scheduler_home.mkdir()
    write_tiny_csv(scheduler_home / "tiny.csv")
    db, broker = remote_workers["db"], remote_workers["broker"]
    proc = run_cli(
        "scheduler",
        "launch",
        "--trials",
        "4",
        "--local-workers",
        "0",
        "--db",
        db,
        "--broker",
        broker,
        *LAUNCH,
        cwd=scheduler_home,
    )
    logs = "".join(_log(p) for p in Path(remote_workers["home"]).glob("*.log"))
    assert proc.returncode == 0, proc.stderr + logs
    _check_study(db, json.loads(proc.stdout), 4)
    workers = [w for (w,) in _rows(db, "SELECT DISTINCT worker FROM trials")]
    assert all(w.rsplit(":", 1)[1].isdigit() for w in workers)  # host:pid
    assert not list(scheduler_home.glob("*.db"))  # nothing embedded was used

    # A redelivered message for a finished trial is acknowledged without a second run.
    from scheduler.enqueue import enqueue_trials
    from seqsweep.broker import make_app
    from seqsweep.db import ResultStore

    store = ResultStore(db)
    study = store.get_study("e2e")
    assert study is not None
    enqueue_trials(make_app(broker), study, [0, 1])
    _wait_for_log(Path(remote_workers["home"]), "trial 0 is not queued", 60)
    _wait_for_log(Path(remote_workers["home"]), "trial 1 is not queued", 60)
    assert _rows(db, "SELECT sum(attempts), count(*) FROM trials") == [(4, 4)]
    assert _rows(db, "SELECT count(*) FROM trial_epochs") == [(4,)]
    assert _readme_query(db, "postgresql")[0] == json.loads(proc.stdout)["best"]["number"]


def _wait_for_log(home: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in _log(p) for p in home.glob("*.log")):
            return
        time.sleep(0.5)
    raise AssertionError(f"no worker logged {text!r} within {timeout}s")


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
