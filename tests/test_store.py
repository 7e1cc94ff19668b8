"""The results store on SQLite and PostgreSQL: idempotent writes, atomic claims, migrations."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from scheduler.data import synthetic_dataset
from scheduler.sampling import sample
from scheduler.space import default_space
from seqsweep.db import EpochRecord, ResultStore, TrialResult
from seqsweep.db.migrate import current_revision, head_revision
from seqsweep.db.schema import metadata
from seqsweep.errors import ConnectionFailedError, StudyConflictError
from seqsweep.settings import StudySettings

SPACE = default_space()
DATA = synthetic_dataset(n_rows=60)
SETTINGS = StudySettings(epochs=1, val_fraction=0.25).to_dict()  # floats round-trip too


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


def _create(store: ResultStore, n: int, *, name: str = "s", seed: int = 1) -> Any:
    return store.create_study(
        name,
        seed=seed,
        space=SPACE.to_dict(),
        settings=SETTINGS,
        data=DATA,
        trial_params={i: sample(SPACE, seed, i) for i in range(n)},
    )


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
        store.create_study(
            "s",
            seed=1,
            space=SPACE.to_dict(),
            settings=SETTINGS,
            data=synthetic_dataset(n_rows=61),
            trial_params={},
        )
    study = store.get_study("s")
    assert study is not None
    assert store.counts(study.id).total == 2  # the refused call wrote nothing


def test_claim_is_once_and_finish_is_idempotent(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 2)
    claimed = store.claim(study.id, 1, "w1")
    assert claimed is not None and claimed.params == sample(SPACE, 1, 1)
    assert claimed.settings == SETTINGS and claimed.seed == 1
    assert store.claim(study.id, 1, "w2") is None  # a redelivered message
    assert store.finish_trial(claimed.trial_id, _result(0.8)) is True
    assert store.finish_trial(claimed.trial_id, _result(0.9, epochs=3)) is False
    assert store.claim(study.id, 1, "w3") is None
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
    claimed = store.claim(study.id, 0, "w")
    assert claimed is not None
    assert store.fail_trial(claimed.trial_id, "loss became nan at epoch 1")
    [trial] = store.get_trials(study.id)
    assert trial.status == "failed" and "nan" in (trial.error or "")
    assert store.counts(study.id).failed == 1


def test_best_is_highest_val_accuracy_then_lowest_val_loss(db_url: str) -> None:
    store = ResultStore(db_url)
    study, _ = _create(store, 3)
    for number, (acc, loss) in enumerate([(0.8, 0.5), (0.9, 0.4), (0.9, 0.3)]):
        claimed = store.claim(study.id, number, "w")
        assert claimed is not None
        result = TrialResult(
            val_loss=loss,
            val_accuracy=acc,
            test_loss=0.1,
            test_accuracy=0.5,
            duration_s=1.0,
            device="cpu",
        )
        store.finish_trial(claimed.trial_id, result)
    assert [t.number for t in store.top_trials(study.id, 3)] == [2, 1, 0]


def _claim_in_process(url: str, study_id: int, barrier: Any, out: Any) -> None:
    store = ResultStore(url)
    barrier.wait()
    out.put(store.claim(study_id, 0, f"p{multiprocessing.current_process().pid}") is not None)


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


def test_migrations_match_the_schema_and_are_idempotent(db_url: str) -> None:
    store = ResultStore(db_url)
    assert store.migrate() is False  # already at head after opening
    engine = sqlalchemy.create_engine(db_url)
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
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
