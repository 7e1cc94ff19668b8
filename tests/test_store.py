"""The results store on SQLite and PostgreSQL: idempotent writes, atomic claims, migrations."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from scheduler.data import synthetic_dataset
from scheduler.sampling import sample
from scheduler.space import default_space
from seqsweep.db import EpochRecord, Recovery, ResultStore, TrialResult
from seqsweep.db.migrate import HEAD, current_revision, head_revision
from seqsweep.db.schema import metadata
from seqsweep.errors import ConnectionFailedError, StudyConflictError
from seqsweep.settings import StudySettings
from tests.conftest import create_study

SPACE = default_space()
DATA = synthetic_dataset(n_rows=60)
SETTINGS = StudySettings(epochs=1, val_fraction=0.25).to_dict()  # floats round-trip too


def _create(store: ResultStore, n: int, **kwargs: Any) -> Any:
    return create_study(store, n, settings=SETTINGS, data=DATA, **kwargs)


def _claim(store: ResultStore, study_id: int, number: int, worker: str = "w", lease_s: float = 60):
    return store.claim(study_id, number, worker, lease_s=lease_s)


def _result(acc: float, epochs: int = 2) -> TrialResult:
    return TrialResult(
        val_loss=1 - acc,
        val_accuracy=acc,
        test_loss=1 - acc,
        test_accuracy=acc,
        duration_s=0.1,
        device="cpu",
        epochs=tuple(EpochRecord(e, 0.5, acc, 0.5, acc) for e in range(1, epochs + 1)),
    )


def test_creating_a_study_twice_adds_only_missing_trials(db_url: str) -> None:
    store = ResultStore(db_url)
    study, added = _create(store, 5)
    assert added == [0, 1, 2, 3, 4]
    again, added = _create(store, 5)
    assert again.id == study.id and added == []
    _, added = _create(store, 8)
    assert added == [5, 6, 7]
    assert store.counts(study.id).total == 8
    assert store.counts(study.id).queued == 8
    trial = store.get_trials(study.id, [6])[0]
    assert trial.params == sample(SPACE, 1, 6)


def test_dataset_is_stored_once_by_content(db_url: str) -> None:
    store = ResultStore(db_url)
    _create(store, 1, name="a")
    _create(store, 1, name="b")
    with store.session() as conn:
        assert conn.execute(sqlalchemy.text("SELECT count(*) FROM datasets")).scalar() == 1
    study = store.get_study("a")
    assert study is not None
    assert store.load_dataset(study.dataset_hash).content_hash() == DATA.content_hash()


def test_existing_study_refuses_different_inputs(db_url: str) -> None:
    store = ResultStore(db_url)
    _create(store, 2)
    with pytest.raises(StudyConflictError, match=r"different seed .*--study NEW_NAME"):
        _create(store, 2, seed=2)
    with pytest.raises(StudyConflictError, match="different dataset"):
        create_study(store, 2, settings=SETTINGS, data=synthetic_dataset(n_rows=61))
    study = store.get_study("s")
    assert study is not None
    assert store.counts(study.id).total == 2  # the refused call wrote nothing


def test_claim_is_once_and_finish_is_idempotent(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 2)
    claimed = _claim(store, study.id, 1, "w1")
    assert claimed is not None and claimed.params == sample(SPACE, 1, 1)
    assert claimed.settings == SETTINGS and claimed.seed == 1 and claimed.attempt == 1
    assert _claim(store, study.id, 1, "w2") is None  # a redelivered message
    assert store.finish_trial(claimed, _result(0.8)) is True
    assert store.finish_trial(claimed, _result(0.9, epochs=3)) is False
    assert _claim(store, study.id, 1, "w3") is None
    [trial] = store.get_trials(study.id, [1])
    assert (trial.status, trial.attempts, trial.worker, trial.val_accuracy) == (
        "succeeded",
        1,
        "w1",
        0.8,
    )
    assert [e.epoch for e in store.epochs(trial.id)] == [1, 2]


def test_fail_records_the_reason(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 1)
    claimed = _claim(store, study.id, 0)
    assert claimed is not None
    assert store.fail_trial(claimed, "loss became nan at epoch 1")
    [trial] = store.get_trials(study.id)
    assert trial.status == "failed" and "nan" in (trial.error or "")
    assert store.counts(study.id).failed == 1


def test_best_is_highest_val_accuracy_then_lowest_val_loss(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 3)
    for number, (acc, loss) in enumerate([(0.8, 0.5), (0.9, 0.4), (0.9, 0.3)]):
        claimed = _claim(store, study.id, number)
        assert claimed is not None
        result = TrialResult(
            val_loss=loss,
            val_accuracy=acc,
            test_loss=0.1,
            test_accuracy=0.5,
            duration_s=1.0,
            device="cpu",
        )
        store.finish_trial(claimed, result)
    assert [t.number for t in store.top_trials(study.id, 3)] == [2, 1, 0]


def _claim_in_process(url: str, study_id: int, barrier: Any, out: Any) -> None:
    store = ResultStore(url)
    barrier.wait()
    out.put(_claim(store, study_id, 0, f"p{multiprocessing.current_process().pid}") is not None)


def test_concurrent_claims_from_processes_have_one_winner(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 1)
    store.dispose()
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_process, args=(db_url, study.id, barrier, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(results) == [False, False, False, True]
    assert store.get_trials(study.id)[0].attempts == 1


def _expire(store: ResultStore, study_id: int, number: int, worker: str) -> Any:
    """Claim with a lease that is over at once, as if the worker died right away."""
    claimed = _claim(store, study_id, number, worker, lease_s=0.001)
    assert claimed is not None
    time.sleep(0.05)
    return claimed


def test_expired_lease_requeues_then_fails_after_max_attempts(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 2, max_attempts=2)
    assert study.max_attempts == 2
    healthy = _claim(store, study.id, 1, "alive")
    _expire(store, study.id, 0, "host:111")
    recovery = store.recover_lost(study.id)
    assert recovery.requeued == (0,) and recovery.gave_up == ()
    [trial] = store.get_trials(study.id, [0])
    assert trial.status == "queued" and trial.enqueued_at is None  # needs a new message
    assert "attempt 1 lost: worker host:111" in (trial.error or "")

    second = _expire(store, study.id, 0, "host:222")
    assert second.attempt == 2
    recovery = store.recover_lost(study.id)
    assert recovery.gave_up == (0,) and recovery.requeued == ()
    trial, other = store.get_trials(study.id)
    assert trial.status == "failed" and trial.attempts == 2
    assert "gave up after 2 attempts (max_attempts=2)" in (trial.error or "")
    # A live lease is never touched.
    assert other.status == "running" and healthy is not None
    assert store.recover_lost(study.id) == Recovery()


def test_a_stale_claim_can_neither_renew_nor_write(db_url: str) -> None:
    """The attempt number fences a worker that lost its lease: no trial succeeds twice."""
    store = ResultStore(db_url)
    study, _ = _create(store, 1)
    stale = _expire(store, study.id, 0, "slow")
    assert store.recover_lost(study.id).requeued == (0,)
    fresh = _claim(store, study.id, 0, "new")
    assert fresh is not None and fresh.attempt == 2
    assert store.heartbeat(stale, lease_s=60) is False
    assert store.finish_trial(stale, _result(0.99)) is False
    assert store.fail_trial(stale, "late") is False
    assert store.heartbeat(fresh, lease_s=60) is True
    assert store.finish_trial(fresh, _result(0.7)) is True
    [trial] = store.get_trials(study.id)
    assert (trial.status, trial.worker, trial.val_accuracy) == ("succeeded", "new", 0.7)
    assert trial.lease_expires_at is None


def test_heartbeat_keeps_a_lease_alive(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 1)
    claimed = _claim(store, study.id, 0, lease_s=0.2)
    assert store.heartbeat(claimed, lease_s=60) is True
    time.sleep(0.3)
    assert store.recover_lost(study.id) == Recovery()
    assert store.get_trials(study.id)[0].status == "running"


def test_each_queued_trial_is_sent_once(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 5)
    sent: list[int] = []
    assert store.send_unsent(study.id, sent.extend) == 5
    assert store.send_unsent(study.id, sent.extend) == 0
    assert sent == [0, 1, 2, 3, 4]

    # A send that fails marks nothing: the next launch sends those trials.
    assert store.mark_unsent(study.id, [1, 3]) == [1, 3]

    def broken(numbers: list[int]) -> None:
        raise ConnectionFailedError("broker down")

    with pytest.raises(ConnectionFailedError):
        store.send_unsent(study.id, broken)
    assert store.send_unsent(study.id, sent.extend) == 2
    assert sent[5:] == [1, 3]


def test_queued_waiting_sees_only_old_messages(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 2)
    store.send_unsent(study.id, lambda numbers: None)
    assert store.queued_waiting(study.id, longer_than_s=3600) == []
    time.sleep(0.05)
    assert store.queued_waiting(study.id, longer_than_s=0.01) == [0, 1]
    _claim(store, study.id, 0)
    assert store.queued_waiting(study.id, longer_than_s=0.01) == [1]


def test_concurrent_senders_send_each_trial_once(db_url: str) -> None:
    """Two launches of one study at once: the row locks decide who sends each trial."""
    store = ResultStore(db_url)
    study, _ = _create(store, 1200)  # more than one batch
    sent: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def send(i: int) -> None:
        other = ResultStore(db_url)
        barrier.wait()
        other.send_unsent(study.id, sent[i].extend)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(sent[0] + sent[1]) == list(range(1200))


def test_study_without_seed_keeps_the_stored_seed(db_url: str) -> None:
    store = ResultStore(db_url)
    first, _ = _create(store, 2, seed=None)
    assert first.seed == 99  # the fresh seed
    again, added = _create(store, 3, seed=None, fresh_seed=12345, max_attempts=5)
    assert (again.seed, again.max_attempts, added) == (99, 5, [2])
    assert store.get_trials(again.id, [2])[0].params == sample(SPACE, 99, 2)


def test_migrations_match_the_schema_and_are_idempotent(db_url: str) -> None:
    store = ResultStore(db_url)
    assert store.migrate() is False  # already at head after opening
    engine = sqlalchemy.create_engine(db_url)
    with engine.connect() as conn:
        # HEAD, which spares an open store Alembic's import, is Alembic's own head.
        assert current_revision(conn) == head_revision() == HEAD
        # The migrations create exactly what the code's schema declares.
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        columns = {c["name"] for c in sqlalchemy.inspect(conn).get_columns("trials")}
    engine.dispose()
    assert {
        "id",
        "study_id",
        "number",
        "params",
        "status",
        "attempts",
        "worker",
        "device",
        "started_at",
        "finished_at",
        "duration_s",
        "val_loss",
        "val_accuracy",
        "test_loss",
        "test_accuracy",
        "error",
        "enqueued_at",
        "heartbeat_at",
        "lease_expires_at",
    } <= columns


def test_unreachable_database_is_one_masked_line() -> None:
    with pytest.raises(ConnectionFailedError) as err:
        ResultStore("postgresql+psycopg://bob:s3cret@127.0.0.1:1/nope")
    message = str(err.value)
    assert "s3cret" not in message and "bob:***@" in message
    assert "check --db" in message and "\n" not in message


def test_process_store_is_recreated_after_fork(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool process must never reuse connections it inherited from its parent."""
    import os

    first = ResultStore.for_process(sqlite_url)
    assert ResultStore.for_process(sqlite_url) is first
    parent = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: parent + 1)  # as seen from a forked child
    child = ResultStore.for_process(sqlite_url)
    assert child is not first
    assert child._engine is not first._engine


def test_a_large_study_is_written_in_batches_that_let_other_writers_in(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sampling and inserting 100,000 trials in one transaction held SQLite's write lock
    for minutes; other commands failed with "database is locked"."""
    import sqlite3

    from seqsweep.db import store as store_module

    monkeypatch.setattr(store_module, "INSERT_BATCH", 10)
    store = ResultStore(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")
    others: list[int] = []

    def sampled(seed: int, number: int) -> dict[str, Any]:
        if number in (5, 25):  # while the study is written: can another process write?
            con = sqlite3.connect(path, timeout=0)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
                others.append(number)
            except sqlite3.OperationalError:
                pass
            finally:
                con.close()
        return sample(SPACE, seed, number)

    study, added = store.create_study(
        "big",
        seed=1,
        fresh_seed=99,
        space=SPACE.to_dict(),
        settings=SETTINGS,
        data=DATA,
        trials=35,
        sample=sampled,
    )
    assert added == list(range(35))
    assert others == [5, 25]  # sampling happens outside every write transaction
    assert store.require_study("big").status == "running"
    assert [t.number for t in store.get_trials(study.id)] == list(range(35))
    # A small extension stays one transaction: its sampling holds the lock.
    _, added = _create(store, 36, name="big")
    assert added == [35]
