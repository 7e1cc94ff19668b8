"""Bad input: one clear line on stderr, exit code 2, no traceback, no study written."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

DB = "sqlite:///results.db"
BROKER = "sqla+sqlite:///broker.db"


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exit code 2 and exactly one stderr line containing ``fragment``, no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def _files(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b,label\n1,oops,x\n3,4,y\n")
    (tmp_path / "nan.csv").write_text("a,b,label\n1,,x\n3,4,y\n")
    (tmp_path / "one.csv").write_text("a,b,label\n1,2,x\n3,4,x\n")
    (tmp_path / "few.csv").write_text("a,b,label\n1,2,x\n3,4,y\n5,6,x\n")
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    np.savez(tmp_path / "len.npz", X=np.zeros((4, 2)), y=np.zeros(3))
    (tmp_path / "space.yaml").write_text("dense_units: {type: choice, values: []}\n")
    (tmp_path / "unknown.yaml").write_text("units: 3\n")
    (tmp_path / "lowhigh.json").write_text(
        json.dumps(
            {
                "dense_units": 8,
                "dropout_rate1": {"type": "uniform", "low": 0.4, "high": 0.1},
                "dropout_rate2": 0.1,
                "learning_rate": 0.01,
            }
        )
    )


CASES = [
    (["--trials", "0"], "--trials: must be >= 1, got 0"),
    (["--trials", "x"], "--trials: must be an integer"),
    (["--data", "missing.csv", "--target", "y"], "data file missing.csv: not found"),
    (["--data", "bad.csv", "--target", "nope"], "target column 'nope' not found"),
    (["--data", "bad.csv", "--target", "label"], "feature column 'b' is not numeric"),
    (["--data", "nan.csv", "--target", "label"], "empty or NaN cell in column 'b' at row 2"),
    (["--data", "one.csv", "--target", "label"], "at least 2 classes"),
    (["--data", "few.csv", "--target", "label"], "too few to split"),
    (["--data", "nox.npz"], "array 'X' is missing"),
    (["--data", "len.npz"], "X has 4 rows but y has 3"),
    (["--space", "space.yaml"], "choice values must not be empty"),
    (["--space", "unknown.yaml"], "unknown parameter 'units'"),
    (["--space", "lowhigh.json"], "low must be <= high"),
    (["--space", "nope.yaml"], "space file nope.yaml: not found"),
    (["--epochs", "0"], "--epochs: must be >= 1"),
    (["--val-fraction", "0.7"], "val_fraction: must be in (0, 0.5)"),
    (["--study", "has space"], "--study 'has space'"),
    (["--db", "mysql://x@h/db"], "backend 'mysql' is not supported"),
    (["--broker", "ftp://x"], "unsupported URL"),
    (["--broker", "memory://"], "unsupported URL"),  # cannot reach worker processes
]


@pytest.mark.parametrize(("flags", "fragment"), CASES, ids=[c[1][:30] for c in CASES])
def test_bad_launch_input(tmp_path: Path, flags: list[str], fragment: str) -> None:
    _files(tmp_path)
    proc = run_cli(
        "scheduler",
        "launch",
        "--db",
        DB,
        "--broker",
        BROKER,
        *flags,
        "--local-workers",
        "0",
        cwd=tmp_path,
        timeout=60,
    )
    _assert_one_line_error(proc, fragment)
    db = tmp_path / "results.db"
    if db.exists():
        with sqlite3.connect(db) as con:
            assert con.execute("SELECT count(*) FROM studies").fetchone() == (0,)


def test_unreachable_broker_fails_fast_and_masks_password(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = run_cli(
        "scheduler",
        "launch",
        "--db",
        DB,
        "--broker",
        "redis://:hunter2@127.0.0.1:1/0",
        cwd=tmp_path,
        timeout=60,
    )
    _assert_one_line_error(proc, "cannot reach broker redis://:***@127.0.0.1:1/0")
    assert time.monotonic() - started < 20
    assert "hunter2" not in proc.stderr + proc.stdout


def test_unreachable_db_fails_fast_and_masks_password(tmp_path: Path) -> None:
    proc = run_cli(
        "scheduler",
        "report",
        "--db",
        "postgresql+psycopg://u:hunter2@127.0.0.1:1/x",
        cwd=tmp_path,
        timeout=60,
    )
    _assert_one_line_error(proc, "u:***@127.0.0.1:1/x")
    assert "hunter2" not in proc.stderr


def test_env_urls_are_used_and_masked(tmp_path: Path) -> None:
    proc = run_cli(
        "scheduler",
        "report",
        cwd=tmp_path,
        timeout=60,
        env={"SEQSWEEP_DB_URL": "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"},
    )
    _assert_one_line_error(proc, "u:***@127.0.0.1:1/x")


def test_report_on_unknown_study(tmp_path: Path) -> None:
    proc = run_cli("scheduler", "report", "--db", DB, "--study", "nope", cwd=tmp_path, timeout=60)
    _assert_one_line_error(proc, "study 'nope' not found")
    assert "no studies" in proc.stderr


def test_worker_rejects_bad_urls(tmp_path: Path) -> None:
    proc = run_cli("worker", "--db", "nonsense", cwd=tmp_path, timeout=60)
    _assert_one_line_error(proc, "not a database URL")


def test_migrate_command(tmp_path: Path) -> None:
    first = run_cli("scheduler", "migrate", "--db", DB, cwd=tmp_path, timeout=60)
    second = run_cli("scheduler", "migrate", "--db", DB, cwd=tmp_path, timeout=60)
    assert first.returncode == second.returncode == 0
    assert "upgraded to the newest schema" in first.stdout
    assert "already at the newest schema" in second.stdout
