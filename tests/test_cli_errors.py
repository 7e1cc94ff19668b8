"""Bad input: one clear line on stderr, exit code 2, no traceback, no study written."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli, write_tiny_csv

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
    rng = np.random.default_rng(0)
    price = "\n".join(
        f"{a:.3f},{b:.3f},{100 + 10 * a + rng.normal():.4f}" for a, b in rng.normal(size=(40, 2))
    )
    (tmp_path / "price.csv").write_text("a,b,price\n" + price + "\n")
    (tmp_path / "deep.yaml").write_text(
        "n_layers: {type: int, low: 1, high: 3}\nlearning_rate: 0.01\n"
        + "".join(f"dense_units{i}: 8\n" for i in (1, 2, 3, 5))
    )
    (tmp_path / "space.yaml").write_text("dense_units: {type: choice, values: []}\n")
    (tmp_path / "unknown.yaml").write_text("units: 3\n")
    (tmp_path / "one_epoch.yaml").write_text("dense_units: 8\nlearning_rate: 0.01\nepochs: 1\n")
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
    (["--trials", "0"], "--trials: must be an integer in [1, 100000], got 0"),
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
    (["--space", "deep.yaml"], "dense_units5 is never used: n_layers' high is 3"),
    (
        ["--data", "price.csv", "--target", "price", "--objective", "val_accuracy"],
        "--objective val_accuracy: a regression study can optimize val_loss, val_mae, val_rmse",
    ),
    (["--objective", "val_mae"], "a classification study can optimize val_accuracy"),
    (["--objective", "r2"], "--objective: invalid choice: 'r2'"),
    (["--sampler", "bayes"], "--sampler: invalid choice: 'bayes'"),
    (["--sampler", "tpe", "--detach"], "--detach: --sampler tpe picks each trial from the"),
    (["--sampler", "cmaes", "--detach"], "--detach: --sampler cmaes picks each trial from"),
    (["--sampler", "tpe", "--in-flight", "0"], "--in-flight: must be an integer in [1, 10000]"),
    (["--sampler", "grid"], "--sampler grid: dropout_rate1 is continuous (uniform in [0.0, 0.5])"),
    (["--pruner", "hyperband"], "--pruner: invalid choice: 'hyperband'"),
    (
        ["--pruner", "asha", "--reduction-factor", "1"],
        "--reduction-factor: must be an integer in [2,",
    ),
    (
        ["--pruner", "asha", "--epochs", "3", "--min-epochs", "3"],
        "--pruner asha: nothing to prune with --epochs 3 and --min-epochs 3",
    ),
    (
        ["--space", "one_epoch.yaml", "--pruner", "asha"],
        "--pruner asha: nothing to prune with the space's epochs (at most 1) and --min-epochs 1",
    ),
    (["--task", "regression"], "--task regression: the built-in dataset is a classification"),
    (
        ["--data", "one.csv", "--target", "label", "--task", "regression"],
        "--task regression needs a numeric target, found 'x'",
    ),
    (["--epochs", "0"], "--epochs: must be an integer in [1, 10000]"),
    (["--pack-size", "0"], "--pack-size: must be auto or an integer in [1, 256]"),
    (["--pack-size", "1000"], "--pack-size: must be auto or an integer in [1, 256], got 1000"),
    (["--val-fraction", "0.7"], "val_fraction: must be in [0.01, 0.5)"),
    (["--study", "has space"], "--study 'has space'"),
    (["--db", "mysql://x@h/db"], "backend 'mysql' is not supported"),
    (["--broker", "ftp://x"], "unsupported URL"),
    (["--broker", "memory://"], "unsupported URL"),  # cannot reach worker processes
]


@pytest.mark.parametrize(("flags", "fragment"), CASES, ids=[c[1][:30] for c in CASES])
def test_bad_launch_input(tmp_path: Path, flags: list[str], fragment: str) -> None:
    _files(tmp_path)
    before = set(tmp_path.rglob("*"))
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
    assert _written(tmp_path, before) == [], "a refused launch wrote files"


def _written(folder: Path, before: set[Path]) -> list[str]:
    """Files (and folders) in ``folder`` that were not in ``before``."""
    return sorted(str(p.relative_to(folder)) for p in set(folder.rglob("*")) - before)


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
    assert run_cli("scheduler", "migrate", "--db", DB, cwd=tmp_path, timeout=60).returncode == 0
    proc = run_cli("scheduler", "report", "--db", DB, "--study", "nope", cwd=tmp_path, timeout=60)
    _assert_one_line_error(proc, "study 'nope' not found")
    assert "no studies" in proc.stderr


READ_COMMANDS = [
    ["report"],
    ["report", "--study", "s", "--html", "r.html"],
    ["status"],
    ["status", "s"],
    ["cancel", "--study", "s"],
    ["export", "--study", "s", "--out", "best.keras"],
    ["recover"],
    ["export-optuna", "--study", "s", "--storage", "sqlite:///optuna.db"],
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("db", [None, "sqlite:///elsewhere/results.db"], ids=["default", "flag"])
def test_commands_that_read_results_refuse_a_missing_db_and_create_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    db: str | None,
) -> None:
    from scheduler.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEQSWEEP_DB_URL", raising=False)
    monkeypatch.delenv("SEQSWEEP_BROKER_URL", raising=False)
    (tmp_path / "elsewhere").mkdir()
    assert main([*command, *(["--db", db] if db else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    missing = tmp_path / ("elsewhere/results.db" if db else "seqsweep.db")
    assert err == [
        f"error: no results DB at {missing}: the file does not exist; run the command where "
        "launch wrote it, or pass --db URL (or set $SEQSWEEP_DB_URL)"
    ]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["elsewhere"]


def test_worker_rejects_bad_urls(tmp_path: Path) -> None:
    proc = run_cli("worker", "--db", "nonsense", cwd=tmp_path, timeout=60)
    _assert_one_line_error(proc, "not a database URL")


def test_migrate_command(tmp_path: Path) -> None:
    first = run_cli("scheduler", "migrate", "--db", DB, cwd=tmp_path, timeout=60)
    second = run_cli("scheduler", "migrate", "--db", DB, cwd=tmp_path, timeout=60)
    assert first.returncode == second.returncode == 0
    assert "upgraded to the newest schema" in first.stdout
    assert "already at the newest schema" in second.stdout


# -- more bad input: every case of the README's list, each in its own row ------


def _more_files(tmp_path: Path) -> None:
    (tmp_path / "latin1.csv").write_bytes(b"a,b,label\n1,2,\xe9t\xe9\n")  # not UTF-8
    (tmp_path / "nanword.csv").write_text("a,b,label\n1,nan,x\n3,4,y\n")
    (tmp_path / "ragged.csv").write_text("a,label\n1,x,9\n2,y,8\n")  # more fields than header
    (tmp_path / "header.csv").write_text("a,b,label\n")
    (tmp_path / "notzip.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "noy.npz", X=np.zeros((3, 2)))
    valid = {
        "dense_units": 8,
        "dropout_rate1": 0.1,
        "dropout_rate2": 0.1,
        "learning_rate": 0.01,
    }
    for name, change in {
        "badkey": {"dropout_rate1": {"type": "uniform", "low": 0.0, "high": 0.3, "mean": 1}},
        "badtype": {"dropout_rate1": {"type": "normal", "low": 0.0, "high": 0.3}},
        "strunits": {"dense_units": {"type": "choice", "values": ["big", "small"]}},
        "dropout1": {"dropout_rate2": 1.0},
        "dropoutneg": {"dropout_rate1": {"type": "uniform", "low": -0.1, "high": 0.3}},
        "lr0": {"learning_rate": 0},
        "lrneg": {"learning_rate": {"type": "uniform", "low": -0.01, "high": 0.01}},
        "units0": {"dense_units": {"type": "choice", "values": [0, 8]}},
        "huge": {"dense_units": {"type": "int", "low": 1, "high": 10**30}},
    }.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({**valid, **change}))
    (tmp_path / "list.yaml").write_text("- dense_units\n- 8\n")
    (tmp_path / "broken.yaml").write_text("dense_units: {type: choice, values: [8\n")


MORE_CASES = [
    (["--trials", "-1"], "--trials: must be an integer in [1, 100000], got -1"),
    (["--data", "latin1.csv", "--target", "label"], "cannot be read as CSV"),
    (["--data", "nanword.csv", "--target", "label"], "empty or NaN cell in column 'b' at row 2"),
    (["--data", "ragged.csv", "--target", "label"], "more fields than the header"),
    (["--data", "header.csv", "--target", "label"], "no data rows"),
    (["--data", ".", "--target", "label"], "data file .: is a folder"),
    (["--data", "notzip.npz"], "not an .npz (zip) archive"),
    (["--data", "noy.npz"], "array 'y' is missing"),
    (["--space", "badkey.json"], "unknown key 'mean' for type uniform"),
    (["--space", "badtype.json"], "type must be one of"),
    (["--space", "strunits.json"], "dense_units must be a number"),
    (["--space", "dropout1.json"], "dropout_rate2 must be in [0, 1), got 1.0"),
    (["--space", "dropoutneg.json"], "dropout_rate1 must be in [0, 1), got -0.1"),
    (["--space", "lr0.json"], "learning_rate must be > 0, got 0"),
    (["--space", "lrneg.json"], "learning_rate must be > 0, got -0.01"),
    (["--space", "units0.json"], "dense_units must be in [1, 65536], got 0"),
    (["--space", "huge.json"], "must be at most 2**53"),
    (["--space", "list.yaml"], "must be a mapping of parameter names"),
    (["--space", "broken.yaml"], "not valid YAML/JSON"),
]


@pytest.mark.parametrize(("flags", "fragment"), MORE_CASES, ids=[c[1][:30] for c in MORE_CASES])
def test_more_bad_launch_input(tmp_path: Path, flags: list[str], fragment: str) -> None:
    _more_files(tmp_path)
    test_bad_launch_input(tmp_path, flags, fragment)


# -- the red-team round: inputs that exhausted memory, hung, or were taken wrongly ----

#: 577 bytes that expand to gigabytes if aliases are followed.
BILLION_LAUGHS = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)
_VALID_SPACE = "dropout_rate1: 0.1\ndropout_rate2: 0.1\nlearning_rate: 0.01\n"


def _red_team_files(tmp_path: Path) -> None:
    (tmp_path / "laughs.yaml").write_text(BILLION_LAUGHS)
    (tmp_path / "anchor.yaml").write_text("dense_units: &u 8\n" + _VALID_SPACE)
    (tmp_path / "alias.yaml").write_text("dense_units: &u 8\nepochs: *u\n" + _VALID_SPACE)
    (tmp_path / "dupkey.yaml").write_text("dense_units: 8\ndense_units: 64\n" + _VALID_SPACE)
    (tmp_path / "dupkey.json").write_text(
        '{"dense_units": 8, "dense_units": 64, "dropout_rate1": 0.1, '
        '"dropout_rate2": 0.1, "learning_rate": 0.01}'
    )
    (tmp_path / "hugefile.yaml").write_text("# padding\n" * 200_000)
    (tmp_path / "hugeepochs.yaml").write_text(
        "dense_units: 8\nepochs: {type: int, low: 1, high: 1000000000}\n" + _VALID_SPACE
    )
    (tmp_path / "hugeunits.yaml").write_text(
        "dense_units: {type: choice, values: [8, 10000000]}\n" + _VALID_SPACE
    )
    os.mkfifo(tmp_path / "fifo.yaml")
    os.mkfifo(tmp_path / "fifo.csv")
    np.save(tmp_path / "array.npy", np.zeros((10, 2)))
    (tmp_path / "array.npy").rename(tmp_path / "npy.npz")
    np.savez(tmp_path / "zerocol.npz", X=np.zeros((10, 0)), y=np.arange(10) % 2)
    np.savez(tmp_path / "classes.npz", X=np.zeros((10_000, 2)), y=np.arange(10_000))
    x = np.random.default_rng(0).normal(size=(40, 2))
    x[3, 1] = 1e30
    np.savez(tmp_path / "huge.npz", X=x, y=np.arange(40) % 2)
    (tmp_path / "dupcol.csv").write_text("a,b,a,label\n1,2,3,x\n4,5,6,y\n7,8,9,x\n")


RED_TEAM_CASES = [
    (["--space", "laughs.yaml"], "anchors and aliases (& and *) are not allowed"),
    (["--space", "anchor.yaml"], "anchors and aliases (& and *) are not allowed"),
    (["--space", "alias.yaml"], "anchors and aliases (& and *) are not allowed"),
    (["--space", "dupkey.yaml"], "duplicate key 'dense_units'"),
    (["--space", "dupkey.json"], "duplicate key 'dense_units'"),
    (["--space", "hugefile.yaml"], "more than the 1048576 bytes allowed"),
    (["--space", "hugeepochs.yaml"], "epochs must be in [1, 10000], got 1000000000"),
    (["--space", "hugeunits.yaml"], "dense_units must be in [1, 65536], got 10000000"),
    (["--space", "fifo.yaml"], "space file fifo.yaml: is not a regular file"),
    (["--data", "fifo.csv", "--target", "label"], "data file fifo.csv: is not a regular file"),
    (["--data", "npy.npz"], "not an .npz (zip) archive"),
    (["--data", "zerocol.npz"], "X has no feature columns"),
    (["--data", "classes.npz"], "the target has 10000 classes in 10000 rows"),
    (["--data", "huge.npz"], "feature 1 is 1e+30 at row 3"),
    (["--data", "dupcol.csv", "--target", "label"], "column 'a' appears twice in the header"),
    (["--trials", "1000000000"], "--trials: must be an integer in [1, 100000], got 1000000000"),
    (["--local-workers", "100000"], "--local-workers: must be an integer in [0, 256]"),
    (["--epochs", "1" + "0" * 30], "--epochs: must be an integer in [1, 10000]"),
    (["--epochs", "9" * 5000], "--epochs: must be an integer in [1, 10000]"),
    (["--batch-size", str(2**63 + 1)], "--batch-size: must be an integer in [1, 1000000]"),
    (["--top", str(2**63 + 1)], "--top: must be an integer in [1, 100000]"),
    (["--max-attempts", "1000000"], "--max-attempts: must be an integer in [1, 100]"),
    (["--db", "sqlite://user:hunter2@/x.db"], "sqlite://user:***@/x.db"),
]


@pytest.mark.parametrize(
    ("flags", "fragment"), RED_TEAM_CASES, ids=[c[1][:30] for c in RED_TEAM_CASES]
)
def test_red_team_launch_input(
    tmp_path: Path,
    flags: list[str],
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In-process (the CLI's own ``main``), under a timeout: 20 s instead of 40 s as
    subprocesses; a hang (a FIFO read) fails instead of stalling."""
    from scheduler.cli import main

    _red_team_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.rglob("*"))
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def hung(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"launch {flags} hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        argv = ["launch", "--db", DB, "--broker", BROKER, *flags, "--local-workers", "0"]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = int(exc.code or 0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    out, err = capsys.readouterr()
    _assert_one_line_error(subprocess.CompletedProcess(argv, code, out, err), fragment)
    assert _written(tmp_path, before) == [], "a refused launch wrote files"


def test_unreachable_db_on_launch_fails_fast_and_masks_password(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = run_cli(
        "scheduler",
        "launch",
        "--db",
        "postgresql://u:hunter2@127.0.0.1:1/x",
        "--broker",
        BROKER,
        cwd=tmp_path,
        timeout=60,
    )
    _assert_one_line_error(proc, "cannot use results DB postgresql://u:***@127.0.0.1:1/x")
    assert time.monotonic() - started < 20
    assert "hunter2" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("change", "difference"),
    [
        (["--space", "other.yaml"], "different search space"),
        (["--data", "other.csv"], "different dataset"),
        (["--epochs", "3"], "different settings (epochs: stored 10, given 3)"),
        (["--sampler", "sobol"], "different settings (sampler: stored random, given sobol)"),
    ],
    ids=["space", "dataset", "settings", "sampler"],
)
def test_study_name_reused_with_other_inputs_is_refused(
    tmp_path: Path, change: list[str], difference: str
) -> None:
    write_tiny_csv(tmp_path / "tiny.csv")
    write_tiny_csv(tmp_path / "other.csv", seed=1)
    (tmp_path / "other.yaml").write_text(
        "dense_units: 8\ndropout_rate1: 0.1\ndropout_rate2: 0.1\nlearning_rate: 0.01\n"
    )
    base = ["scheduler", "launch", "--detach", "--db", DB, "--broker", BROKER]
    base += ["--local-workers", "0", "--study", "s1", "--trials", "2", "--seed", "5"]
    first = run_cli(*base, "--data", "tiny.csv", "--target", "label", cwd=tmp_path, timeout=60)
    assert first.returncode == 0, first.stderr
    flags = {"--data": "tiny.csv", "--target": "label"}
    for key, value in zip(change[::2], change[1::2], strict=True):
        flags[key] = value
    again = run_cli(
        *base, *(x for kv in flags.items() for x in kv), "--trials", "4", cwd=tmp_path, timeout=60
    )
    _assert_one_line_error(again, f"study 's1' already exists with a {difference}")
    assert "--study NEW_NAME" in again.stderr
    with sqlite3.connect(tmp_path / "results.db") as con:  # nothing added to the old study
        assert con.execute("SELECT count(*) FROM trials").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM studies").fetchone() == (1,)


def test_results_db_that_is_not_sqlite_or_too_new_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "notdb.db").write_text("hello, not a database\n")
    proc = run_cli("scheduler", "status", "--db", "sqlite:///notdb.db", cwd=tmp_path)
    _assert_one_line_error(proc, "the file is not a SQLite database")
    assert (tmp_path / "notdb.db").read_text() == "hello, not a database\n"
    assert run_cli("scheduler", "migrate", "--db", DB, cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "results.db") as con:
        con.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    proc = run_cli("scheduler", "migrate", "--db", DB, cwd=tmp_path)
    _assert_one_line_error(proc, "newer than this seqsweep knows")


def test_export_checks_its_out_path_before_retraining(tmp_path: Path) -> None:
    (tmp_path / "dir.keras").mkdir()
    assert run_cli("scheduler", "migrate", "--db", DB, cwd=tmp_path).returncode == 0
    # No study exists: the path is refused first, so nothing would have been retrained.
    for out, fragment in (
        ("dir.keras", "dir.keras: is a folder"),
        ("missing/best.keras", "folder missing does not exist"),
    ):
        proc = run_cli("scheduler", "export", "--db", DB, "--out", out, cwd=tmp_path)
        _assert_one_line_error(proc, fragment)
    for flag, value in (("--trial", str(2**63 + 1)), ("--top", str(2**63 + 1))):
        command = "export" if flag == "--trial" else "report"
        extra = ["--out", "b.keras"] if command == "export" else []
        proc = run_cli("scheduler", command, "--db", DB, flag, value, *extra, cwd=tmp_path)
        _assert_one_line_error(proc, f"{flag}: must be an integer in")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--loglevel", "BOGUS"], "--loglevel 'BOGUS': use one of DEBUG, INFO"),
        (["--logfile", "missing/dir/w.log"], "log file missing/dir/w.log: cannot open it"),
        (["--concurrency", "100000"], "--concurrency: must be an integer in [1, 256]"),
        (["--broker", "sqla+sqlite:///results.db"], "is the results DB file"),
    ],
)
def test_worker_refuses_bad_flags_before_starting(
    tmp_path: Path, flags: list[str], fragment: str
) -> None:
    """Each is refused before a pool process is forked (a bound that came after the fork
    would have started 100,000 processes)."""
    before = set(tmp_path.rglob("*"))
    proc = run_cli("worker", "--db", DB, *flags, cwd=tmp_path, timeout=60)
    _assert_one_line_error(proc, fragment)
    assert _written(tmp_path, before) == []


@pytest.mark.parametrize(
    ("variable", "broker"),
    [
        ("SEQSWEEP_LEASE_S", "sqla+sqlite:///broker.db"),
        ("SEQSWEEP_STOP_GRACE_S", "sqla+sqlite:///broker.db"),
        ("SEQSWEEP_REDIS_VISIBILITY_TIMEOUT_S", "redis://127.0.0.1:1/0"),
    ],
)
def test_launch_validates_environment_settings_and_writes_nothing(
    tmp_path: Path, variable: str, broker: str
) -> None:
    before = set(tmp_path.rglob("*"))
    proc = run_cli(
        "scheduler",
        "launch",
        "--local-workers",
        "0",
        "--broker",
        broker,
        cwd=tmp_path,
        env={variable: "abc"},
        timeout=60,
    )
    _assert_one_line_error(proc, f"${variable}: must be a positive number of seconds")
    assert _written(tmp_path, before) == []


def test_broker_that_is_the_results_db_is_refused_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = run_cli(
        "scheduler",
        "launch",
        "--local-workers",
        "0",
        "--broker",
        "sqla+sqlite:///seqsweep.db",
        cwd=tmp_path,
        timeout=60,
    )
    _assert_one_line_error(proc, "is the results DB file")
    assert time.monotonic() - started < 30
    assert list(tmp_path.iterdir()) == []


def test_a_failing_broker_check_leaves_no_results_db(tmp_path: Path) -> None:
    proc = run_cli(
        "scheduler",
        "launch",
        "--local-workers",
        "0",
        "--broker",
        "redis://127.0.0.1:1/0",
        cwd=tmp_path,
        timeout=60,
    )
    _assert_one_line_error(proc, "cannot reach broker redis://127.0.0.1:1/0")
    assert list(tmp_path.iterdir()) == []


def test_grid_launch_has_each_combination_once_capped_at_trials(tmp_path: Path) -> None:
    (tmp_path / "grid.yaml").write_text(
        "n_layers: {type: choice, values: [1, 2]}\n"
        "dense_units1: {type: choice, values: [8, 16]}\n"
        "dense_units2: {type: choice, values: [8, 16]}\n"
        "learning_rate: {type: choice, values: [0.01, 0.001]}\n"
    )
    base = ["scheduler", "launch", "--detach", "--db", DB, "--broker", BROKER, "--seed", "4"]
    base += ["--local-workers", "0", "--space", "grid.yaml", "--sampler", "grid"]
    first = run_cli(*base, "--trials", "100", cwd=tmp_path, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "study default: 12 trials (every combination of the grid; --trials 100)" in first.stdout
    # A relaunch with fewer trials adds none and drops none.
    assert run_cli(*base, "--trials", "5", cwd=tmp_path, timeout=60).returncode == 0
    with sqlite3.connect(tmp_path / "results.db") as con:
        rows = con.execute("SELECT number, params FROM trials ORDER BY number").fetchall()
    # 2 one-layer networks and 4 two-layer ones, times 2 learning rates.
    assert [n for n, _ in rows] == list(range(12))
    assert len({p for _, p in rows}) == 12
    assert {len(json.loads(p)) for _, p in rows} == {3, 4}  # dense_units2 only with 2 layers
