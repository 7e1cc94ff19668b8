"""Study management: status summaries, cancel, and report as CSV."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import pytest

from scheduler.report import format_csv, study_report
from scheduler.status import cancel_study, format_study, studies_status, study_status
from seqsweep.db import ResultStore
from seqsweep.errors import StudyConflictError, UsageError
from tests.conftest import run_cli, write_tiny_csv
from tests.processes import launch, rows, wait_until, worker_node
from tests.test_store import _claim, _create, _expire, _result


def test_summaries_count_each_state_and_name_the_best(db_url: str) -> None:
    store = ResultStore(db_url)
    a, _ = _create(store, 4, name="a")
    b, _ = _create(store, 2, name="b")
    for number, acc in ((0, 0.7), (1, 0.9)):
        claimed = _claim(store, a.id, number, "host:1")
        assert store.finish_trial(claimed, _result(acc))
    failed = _claim(store, a.id, 2, "host:2")
    store.fail_trial(failed, "ValueError: boom")
    _claim(store, a.id, 3, "host:2")

    rows = {r["study"]: r for r in studies_status(store).as_dict()}
    assert list(rows) == ["a", "b"]
    assert rows["a"]["counts"] == {
        "total": 4,
        "succeeded": 2,
        "pruned": 0,
        "failed": 1,
        "running": 1,
        "queued": 0,
        "cancelled": 0,
    }
    assert (rows["a"]["best_trial"], rows["a"]["best_val_accuracy"]) == (1, 0.9)
    assert rows["b"]["counts"]["queued"] == 2 and rows["b"]["best_trial"] is None

    detail = study_status(store, "a").as_dict()
    assert detail["workers"] == [
        {"worker": "host:1", "succeeded": 2, "pruned": 0, "failed": 0, "running": 0},
        {"worker": "host:2", "succeeded": 0, "pruned": 0, "failed": 1, "running": 1},
    ]
    assert [f["number"] for f in detail["last_failures"]] == [2]
    assert "ValueError: boom" in detail["last_failures"][0]["error"]
    text = format_study(study_status(store, "a"))
    assert "host:2" in text and "trial 2 on host:2: ValueError: boom" in text
    assert b.id != a.id


def test_cancel_refuses_a_study_that_is_not_running_so_it_can_still_be_extended(
    db_url: str,
) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 2, name="done")
    for number in (0, 1):
        assert store.finish_trial(_claim(store, study.id, number), _result(0.8))
    assert store.require_study("done").status == "completed"
    with pytest.raises(UsageError, match="study done is completed, not running: nothing to"):
        cancel_study(store, "done")
    assert store.require_study("done").status == "completed"
    _, added = _create(store, 3, name="done")  # a completed study can be extended
    assert added == [2]
    assert store.require_study("done").status == "running"
    cancel_study(store, "done")
    with pytest.raises(UsageError, match="study done is cancelled, not running"):
        cancel_study(store, "done")


def test_cancel_drops_queued_trials_and_lets_running_ones_finish(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 4, name="a")
    other, _ = _create(store, 2, name="other")
    running = _claim(store, study.id, 0)

    result = cancel_study(store, "a")

    assert result.as_dict() == {"study": "a", "cancelled": [1, 2, 3], "running": [0]}
    assert _claim(store, study.id, 1) is None, "a cancelled trial must not be claimed"
    assert store.finish_trial(running, _result(0.8)), "a running trial may still finish"
    counts = store.counts(study.id)
    assert (counts.succeeded, counts.cancelled, counts.finished, counts.total) == (1, 3, 4, 4)
    assert store.require_study("a").status == "cancelled"
    store.complete_study(study.id)  # what launch does at the end
    assert store.require_study("a").status == "cancelled"
    assert store.counts(other.id).queued == 2 and store.require_study("other").status == "running"
    with pytest.raises(StudyConflictError, match="was cancelled; pass --study NEW_NAME"):
        _create(store, 4, name="a")


def test_a_lost_trial_of_a_cancelled_study_is_cancelled_not_requeued(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 2, name="a")
    _expire(store, study.id, 0, "host:111")
    store.cancel(study.id)
    recovery = store.recover_lost(study.id)
    assert (recovery.requeued, recovery.gave_up, recovery.cancelled) == ((), (), (0,))
    lost = store.get_trials(study.id, [0])[0]
    assert lost.status == "cancelled" and "the study was cancelled" in (lost.error or "")


def test_whoever_records_the_last_outcome_completes_the_study(db_url: str) -> None:
    """A worker's result, a worker's failure or a recovery that gives up: each completes."""
    store = ResultStore(db_url)
    study, _ = _create(store, 3, name="a", max_attempts=1)
    first, second = _claim(store, study.id, 0), _claim(store, study.id, 1)
    assert store.finish_trial(first, _result(0.8))
    assert store.fail_trial(second, "ValueError: boom")
    assert store.require_study("a").status == "running", "trial 2 is still queued"
    _expire(store, study.id, 2, "host:gone")
    assert store.recover_lost(study.id).gave_up == (2,)
    assert store.require_study("a").status == "completed"

    _create(store, 4, name="a", max_attempts=2)  # extending it runs it again
    assert store.require_study("a").status == "running"
    _expire(store, study.id, 3, "host:gone")
    assert store.recover_lost(study.id).requeued == (3,)
    assert store.require_study("a").status == "running", "a requeued trial is not an outcome"
    assert store.finish_trial(_claim(store, study.id, 3), _result(0.7))
    assert store.require_study("a").status == "completed"

    cancelled, _ = _create(store, 2, name="c")
    running = _claim(store, cancelled.id, 0)
    store.cancel(cancelled.id)
    assert store.finish_trial(running, _result(0.9))
    assert store.require_study("c").status == "cancelled"


def test_two_workers_finishing_the_last_two_trials_at_once_complete_the_study(
    pg_url: str,
) -> None:
    """On PostgreSQL, each of two concurrent finishes could see the other's trial running."""
    store = ResultStore(pg_url)
    rounds = 12
    for i in range(rounds):
        study, _ = _create(store, 2, name=f"r{i}")
        claims = [_claim(store, study.id, n) for n in (0, 1)]
        barrier = threading.Barrier(2)

        def finish(claimed: object, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            assert store.finish_trial(claimed, _result(0.5))  # type: ignore[arg-type]

        threads = [threading.Thread(target=finish, args=(c,)) for c in claims]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    statuses = [s.status for s in store.list_studies()]
    assert statuses == ["completed"] * rounds


def test_report_csv_has_full_precision_and_a_column_per_parameter(sqlite_url: str) -> None:
    store = ResultStore(sqlite_url)
    study, _ = _create(store, 3, name="a")
    for number, acc in ((0, 0.5), (2, 0.123456789)):
        assert store.finish_trial(_claim(store, study.id, number), _result(acc))
    rows = list(csv.DictReader(io.StringIO(format_csv(study_report(store, "a")))))
    assert [(r["rank"], r["trial"]) for r in rows] == [("1", "0"), ("2", "2")]
    assert rows[1]["val_accuracy"] == "0.123456789"
    params = store.get_trials(study.id, [0])[0].params
    assert {k: rows[0][k] for k in params} == {k: str(v) for k, v in params.items()}


def test_status_and_cancel_from_the_command_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    env = {"SEQSWEEP_DB_URL": db, "SEQSWEEP_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'b.db'}"}
    for name in ("keep", "stop"):
        made = run_cli(
            "scheduler",
            "launch",
            "--study",
            name,
            "--trials",
            "3",
            "--detach",
            cwd=tmp_path,
            env=env,
        )
        assert made.returncode == 0, made.stderr

    cancelled = run_cli("scheduler", "cancel", "stop", cwd=tmp_path, env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "study stop cancelled: 3 queued trial(s) will not run" in cancelled.stdout

    listing = run_cli("scheduler", "status", "--format", "json", cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    states = {r["study"]: (r["status"], r["counts"]) for r in json.loads(listing.stdout)}
    assert states["keep"][0] == "running" and states["keep"][1]["queued"] == 3
    assert states["stop"][0] == "cancelled" and states["stop"][1]["cancelled"] == 3

    table = run_cli("scheduler", "status", cwd=tmp_path, env=env)
    assert table.returncode == 0 and "cancelled" in table.stdout.splitlines()[2]

    again = run_cli("scheduler", "launch", "--study", "stop", "--detach", cwd=tmp_path, env=env)
    assert again.returncode == 2 and "was cancelled" in again.stderr
    missing = run_cli("scheduler", "cancel", "nope", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "study 'nope' not found" in missing.stderr
    assert "Traceback" not in missing.stderr + again.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_cancel_during_a_launch_stops_it_and_spares_other_studies(tmp_path: Path) -> None:
    """A real launch with a local worker; ``cancel`` from another shell, as a user would."""
    write_tiny_csv(tmp_path / "tiny.csv", rows=600)
    db, broker = f"sqlite:///{tmp_path / 'r.db'}", f"sqla+sqlite:///{tmp_path / 'b.db'}"
    env = {"SEQSWEEP_DB_URL": db, "SEQSWEEP_BROKER_URL": broker}
    data = ["--data", "tiny.csv", "--target", "label", "--epochs", "2", "--batch-size", "8"]
    other = run_cli(
        "scheduler", "launch", "--study", "other", "--trials", "2", "--detach", *data,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    scheduler = launch(
        tmp_path, "launch", "--study", "a", "--trials", "12", "--local-workers", "1", *data, **env
    )
    try:
        wait_until(
            lambda: rows(db, "SELECT count(*) FROM trials t JOIN studies s ON s.id = t.study_id "
                         "WHERE s.name = 'a' AND t.status = 'succeeded'")[0][0] >= 1,
            180, "a first trial of study a",
        )  # fmt: skip
        cancelled = run_cli("scheduler", "cancel", "a", cwd=tmp_path, env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        assert scheduler.wait(120) == 0, scheduler.output()[-3000:]
    finally:
        scheduler.stop()
    states = dict(
        rows(db, "SELECT t.status, count(*) FROM trials t JOIN studies s ON s.id = t.study_id "
                 "WHERE s.name = 'a' GROUP BY t.status")
    )  # fmt: skip
    assert states.get("cancelled", 0) >= 1 and "queued" not in states and "running" not in states
    assert states.get("succeeded", 0) + states["cancelled"] + states.get("failed", 0) == 12
    # Nothing started after the cancel: every cancelled trial never ran.
    assert rows(
        db, "SELECT count(*) FROM trials WHERE status = 'cancelled' AND started_at IS NOT NULL"
    ) == [(0,)]
    assert rows(db, "SELECT status FROM studies WHERE name = 'a'") == [("cancelled",)]
    # The local worker may have run the other study's two trials too, which completes it.
    assert rows(db, "SELECT status FROM studies WHERE name = 'other'") in (
        [("running",)],
        [("completed",)],
    )
    assert rows(
        db, "SELECT count(*) FROM trials t JOIN studies s ON s.id = t.study_id "
            "WHERE s.name = 'other' AND t.status = 'cancelled'"
    ) == [(0,)]  # fmt: skip
    assert "study a (cancelled): 12 trials" in scheduler.output()


@pytest.mark.integration
@pytest.mark.slow
def test_a_detached_study_completes_with_no_launch_waiting(tmp_path: Path) -> None:
    """``launch --detach``, then a worker started on its own: its last result completes it."""
    write_tiny_csv(tmp_path / "tiny.csv")
    db, broker = f"sqlite:///{tmp_path / 'r.db'}", f"sqla+sqlite:///{tmp_path / 'b.db'}"
    env = {"SEQSWEEP_DB_URL": db, "SEQSWEEP_BROKER_URL": broker}
    data = ["--data", "tiny.csv", "--target", "label", "--epochs", "1", "--batch-size", "16"]
    detached = run_cli(
        "scheduler", "launch", "--study", "d", "--trials", "3", "--detach", *data,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert detached.returncode == 0, detached.stderr
    node = worker_node(tmp_path, "worker", db, broker)
    try:
        wait_until(
            lambda: rows(db, "SELECT status FROM studies WHERE name = 'd'") == [("completed",)],
            180,
            "the detached study to complete",
            every=1.0,
        )
    finally:
        node.stop()
    shown = run_cli(
        "scheduler", "status", "--study", "d", "--format", "json", cwd=tmp_path, env=env
    )
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["status"] == "completed"
    assert detail["counts"]["succeeded"] == 3 and detail["counts"]["total"] == 3


def test_report_csv_ranks_no_importance_and_table_caches_it(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler import cli, importance_cache

    store = ResultStore(sqlite_url)
    study, _ = _create(store, 10, name="a")
    for number in range(10):
        assert store.finish_trial(_claim(store, study.id, number), _result(0.5 + number / 100))
    ranked: list[int] = []
    real = importance_cache.hyperparameter_importance

    def counted(*args: object) -> object:
        ranked.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(importance_cache, "hyperparameter_importance", counted)
    report = ["report", "--study", "a", "--db", sqlite_url]
    assert cli.main([*report, "--format", "csv"]) == 0
    assert ranked == []  # CSV shows no ranking, so none is computed
    assert cli.main(report) == 0 and cli.main(report) == 0
    assert ranked == [1]  # the second table report reads the cache
    assert capsys.readouterr().out.count("hyperparameter importance (") == 2
