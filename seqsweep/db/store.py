"""The results store: every read and write of the results DB goes through here.

One session scope (:meth:`ResultStore.session`) commits, rolls back and closes,
and turns SQLAlchemy errors into seqsweep's own. Writes that a redelivered
message may repeat are idempotent: trial rows are keyed on (study_id, number)
and written with ``INSERT ... ON CONFLICT``, and a worker must claim a trial
(queued -> running, atomically) before it may train it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, Row, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from seqsweep.dataset import Dataset
from seqsweep.db.engine import make_engine
from seqsweep.db.migrate import upgrade
from seqsweep.db.records import (
    ClaimedTrial,
    Counts,
    EpochRecord,
    Recovery,
    StudyRecord,
    TrialRecord,
    TrialResult,
)
from seqsweep.db.schema import datasets, studies, trial_epochs, trials
from seqsweep.errors import (
    ConnectionFailedError,
    SeqsweepError,
    StoreError,
    StudyConflictError,
    UsageError,
)
from seqsweep.urls import mask_url

_ERROR_TEXT_LIMIT = 4000
#: Trials sent per transaction by :meth:`ResultStore.send_unsent`.
_SEND_BATCH = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


def _now(conn: Connection) -> Any:
    """The clock that leases are written and judged by.

    On PostgreSQL that is the server's: workers on several machines share it,
    so their clock skew cannot expire a live lease. SQLite is one machine.
    """
    if conn.dialect.name == "postgresql":
        return func.now()
    return utcnow()


class ResultStore:
    """Read and write studies, trials and epochs in one results DB."""

    _per_process: ClassVar[dict[str, tuple[int, ResultStore]]] = {}

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.masked_url = mask_url(url)
        self._engine: Engine = make_engine(url)
        if migrate:
            self.migrate()

    def migrate(self) -> bool:
        """Bring the schema to the newest revision; return True if anything was applied."""
        with self._translate():
            return upgrade(self._engine)

    @classmethod
    def for_process(cls, url: str) -> ResultStore:
        """Return this process's store for ``url``, creating it after any fork."""
        pid = os.getpid()
        cached = cls._per_process.get(url)
        if cached is None or cached[0] != pid:
            cls._per_process[url] = (pid, cls(url))
        return cls._per_process[url][1]

    def dispose(self) -> None:
        """Close every pooled connection (call before forking)."""
        self._engine.dispose()

    # -- the session scope -------------------------------------------------

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except SeqsweepError:
            raise
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                raise ConnectionFailedError(
                    f"cannot use results DB {self.masked_url}: {_reason(exc, self.url)}; "
                    "check --db / SEQSWEEP_DB_URL and that the database is running"
                ) from exc
            raise StoreError(f"results DB {self.masked_url}: {_reason(exc, self.url)}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"results DB {self.masked_url}: {_reason(exc, self.url)}") from exc

    @contextmanager
    def session(self) -> Iterator[Connection]:
        """Run a block in one transaction: commit on success, roll back on error, close."""
        with self._translate(), self._engine.begin() as connection:
            yield connection

    def ping(self) -> None:
        """Raise ConnectionFailedError unless the DB answers."""
        with self.session() as conn:
            conn.execute(select(1))

    @staticmethod
    def _insert(conn: Connection, table: Any) -> Any:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    # -- datasets ----------------------------------------------------------

    def put_dataset(self, data: Dataset, conn: Connection | None = None) -> str:
        """Store ``data`` under its content hash (once) and return the hash."""
        digest = data.content_hash()
        row = {
            "hash": digest,
            "created_at": utcnow(),
            "n_rows": data.n_rows,
            "n_features": data.n_features,
            "n_classes": data.n_classes,
            "classes": list(data.classes),
            "data": data.to_bytes(),
        }
        with self._maybe_session(conn) as c:
            c.execute(
                self._insert(c, datasets)
                .values(row)
                .on_conflict_do_nothing(index_elements=["hash"])
            )
        return digest

    def load_dataset(self, digest: str) -> Dataset:
        with self.session() as conn:
            blob = conn.execute(
                select(datasets.c.data).where(datasets.c.hash == digest)
            ).scalar_one_or_none()
        if blob is None:
            raise StoreError(f"results DB {self.masked_url}: dataset {digest[:12]} is missing")
        return Dataset.from_bytes(blob)

    @contextmanager
    def _maybe_session(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.session() as c:
                yield c

    # -- studies -----------------------------------------------------------

    def create_study(
        self,
        name: str,
        *,
        seed: int | None,
        fresh_seed: int,
        space: Mapping[str, Any],
        settings: Mapping[str, Any],
        data: Dataset,
        trials: int,
        sample: Callable[[int, int], Mapping[str, Any]],
        max_attempts: int = 3,
    ) -> tuple[StudyRecord, list[int]]:
        """Create study ``name`` or load it if it exists, and add missing trials.

        All in one transaction, so a failure leaves no half-written study. An
        existing study must match the space, settings, dataset and (when one
        is given) seed exactly; otherwise it is refused. ``seed=None`` keeps an
        existing study's seed, or uses ``fresh_seed`` for a new one. The
        parameters of trial ``n`` are ``sample(seed, n)``; ``max_attempts`` is a
        retry policy, not part of the experiment, so the latest launch sets it.
        Returns the study and the newly added numbers.
        """
        with self.session() as conn:
            digest = self.put_dataset(data, conn)
            conn.execute(
                self._insert(conn, studies)
                .values(
                    name=name,
                    created_at=utcnow(),
                    seed=fresh_seed if seed is None else seed,
                    space=dict(space),
                    settings=dict(settings),
                    dataset_hash=digest,
                    status="running",
                    max_attempts=max_attempts,
                )
                .on_conflict_do_nothing(index_elements=["name"])
            )
            study = _study(conn.execute(select(studies).where(studies.c.name == name)).one())
            _check_same(
                study,
                seed=study.seed if seed is None else seed,
                space=space,
                settings=settings,
                dataset_hash=digest,
            )
            added = self._add_trials(conn, study, trials, sample)
            conn.execute(
                update(studies)
                .where(studies.c.id == study.id)
                .values(
                    max_attempts=max_attempts,
                    status="running" if added else studies.c.status,
                )
            )
            study = _study(conn.execute(select(studies).where(studies.c.id == study.id)).one())
        return study, added

    def _add_trials(
        self,
        conn: Connection,
        study: StudyRecord,
        trials_wanted: int,
        sample: Callable[[int, int], Mapping[str, Any]],
    ) -> list[int]:
        existing = set(
            conn.execute(select(trials.c.number).where(trials.c.study_id == study.id)).scalars()
        )
        rows = [
            {
                "study_id": study.id,
                "number": n,
                "params": dict(sample(study.seed, n)),
                "status": "queued",
                "attempts": 0,
            }
            for n in range(trials_wanted)
            if n not in existing
        ]
        if rows:
            # ON CONFLICT keeps a concurrent launch of the same study from failing
            # or duplicating rows; the unique key is (study_id, number).
            stmt = (
                self._insert(conn, trials)
                .on_conflict_do_nothing(index_elements=["study_id", "number"])
                .returning(trials.c.number)
            )
            added: list[int] = []
            for start in range(0, len(rows), 1000):
                added.extend(conn.execute(stmt, rows[start : start + 1000]).scalars())
            return sorted(added)
        return []

    def get_study(self, name: str) -> StudyRecord | None:
        with self.session() as conn:
            row = conn.execute(select(studies).where(studies.c.name == name)).one_or_none()
        return None if row is None else _study(row)

    def require_study(self, name: str) -> StudyRecord:
        """Return study ``name``, or raise a UsageError that lists the known studies."""
        study = self.get_study(name)
        if study is None:
            names = [s.name for s in self.list_studies()]
            known = f"known studies: {', '.join(names[:10])}" if names else "the DB has no studies"
            raise UsageError(
                f"study {name!r} not found in {self.masked_url}; {known}; "
                "pass --study NAME or --db URL"
            )
        return study

    def list_studies(self) -> list[StudyRecord]:
        with self.session() as conn:
            return [_study(r) for r in conn.execute(select(studies).order_by(studies.c.id))]

    def set_study_status(self, study_id: int, status: str) -> None:
        with self.session() as conn:
            conn.execute(update(studies).where(studies.c.id == study_id).values(status=status))

    # -- trials ------------------------------------------------------------

    def numbers_in_state(self, study_id: int, status: str) -> list[int]:
        with self.session() as conn:
            return list(
                conn.execute(
                    select(trials.c.number)
                    .where(trials.c.study_id == study_id, trials.c.status == status)
                    .order_by(trials.c.number)
                ).scalars()
            )

    def send_unsent(self, study_id: int, send: Callable[[list[int]], object]) -> int:
        """Hand each queued trial that has no message yet to ``send``; return how many.

        Each batch is marked sent and handed over inside one transaction, so
        two launches of one study never both send a trial (the second waits
        for the first's row locks, then finds them sent), and a failed ``send``
        rolls the marks back for the next launch to retry. Only a launch that
        dies between ``send`` and commit leaves duplicates, which the claim
        makes harmless.
        """
        sent = 0
        while True:
            with self.session() as conn:
                unsent = (
                    select(trials.c.id)
                    .where(
                        trials.c.study_id == study_id,
                        trials.c.status == "queued",
                        trials.c.enqueued_at.is_(None),
                    )
                    .order_by(trials.c.number)
                    .limit(_SEND_BATCH)
                )
                numbers = sorted(
                    conn.execute(
                        update(trials)
                        .where(trials.c.id.in_(unsent), trials.c.enqueued_at.is_(None))
                        .values(enqueued_at=_now(conn))
                        .returning(trials.c.number)
                    ).scalars()
                )
                if not numbers:
                    return sent
                send(numbers)
            sent += len(numbers)

    def claim(
        self, study_id: int, number: int, worker: str, *, lease_s: float
    ) -> ClaimedTrial | None:
        """Move trial (study_id, number) from queued to running; None if it is not queued.

        The conditional UPDATE is the claim: of two workers that get the same
        message, exactly one sees a row come back. The winner holds a lease of
        ``lease_s`` seconds and must renew it with :meth:`heartbeat`.
        """
        with self.session() as conn:
            now = _now(conn)
            claimed = conn.execute(
                update(trials)
                .where(
                    trials.c.study_id == study_id,
                    trials.c.number == number,
                    trials.c.status == "queued",
                )
                .values(
                    status="running",
                    attempts=trials.c.attempts + 1,
                    worker=worker,
                    started_at=utcnow(),
                    finished_at=None,
                    error=None,
                    heartbeat_at=now,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                )
                .returning(trials.c.id, trials.c.params, trials.c.attempts)
            ).one_or_none()
            if claimed is None:
                return None
            study = conn.execute(select(studies).where(studies.c.id == study_id)).one()
        return ClaimedTrial(
            trial_id=claimed.id,
            study_id=study_id,
            study_name=study.name,
            number=number,
            params=dict(claimed.params),
            seed=int(study.seed),
            settings=dict(study.settings),
            dataset_hash=study.dataset_hash,
            attempt=int(claimed.attempts),
        )

    def heartbeat(self, claimed: ClaimedTrial, *, lease_s: float) -> bool:
        """Renew the lease of a claimed trial; False if this claim has lost it."""
        with self.session() as conn:
            now = _now(conn)
            return bool(
                conn.execute(
                    update(trials)
                    .where(_held(claimed))
                    .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
                ).rowcount
                == 1
            )

    def finish_trial(self, claimed: ClaimedTrial, result: TrialResult) -> bool:
        """Record a successful run; False if this claim no longer holds the trial."""
        trial_id = claimed.trial_id
        with self.session() as conn:
            done = conn.execute(
                update(trials)
                .where(_held(claimed))
                .values(
                    status="succeeded",
                    finished_at=utcnow(),
                    duration_s=result.duration_s,
                    device=result.device,
                    val_loss=result.val_loss,
                    val_accuracy=result.val_accuracy,
                    test_loss=result.test_loss,
                    test_accuracy=result.test_accuracy,
                    error=None,
                    lease_expires_at=None,
                )
            ).rowcount
            if done != 1:
                return False
            if result.epochs:
                stmt = self._insert(conn, trial_epochs)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["trial_id", "epoch"],
                    set_={
                        c: stmt.excluded[c]
                        for c in ("loss", "accuracy", "val_loss", "val_accuracy")
                    },
                )
                conn.execute(
                    stmt,
                    [
                        {
                            "trial_id": trial_id,
                            "epoch": e.epoch,
                            "loss": e.loss,
                            "accuracy": e.accuracy,
                            "val_loss": e.val_loss,
                            "val_accuracy": e.val_accuracy,
                        }
                        for e in result.epochs
                    ],
                )
        return True

    def fail_trial(self, claimed: ClaimedTrial, error: str, *, device: str | None = None) -> bool:
        """Record a failed run with its reason; False if this claim no longer holds the trial."""
        with self.session() as conn:
            values: dict[str, Any] = {
                "status": "failed",
                "finished_at": utcnow(),
                "error": error[:_ERROR_TEXT_LIMIT],
                "lease_expires_at": None,
            }
            if device is not None:
                values["device"] = device
            started = conn.execute(
                select(trials.c.started_at).where(trials.c.id == claimed.trial_id)
            ).scalar_one_or_none()
            if started is not None:
                values["duration_s"] = (utcnow() - _aware(started)).total_seconds()
            return bool(
                conn.execute(update(trials).where(_held(claimed)).values(values)).rowcount == 1
            )

    def recover_lost(self, study_id: int) -> Recovery:
        """Requeue running trials whose lease has expired, or fail them after max attempts.

        An expired lease means the worker stopped renewing it: it was killed,
        ran out of memory, or lost its machine. The requeued trials need new
        messages: see :meth:`send_unsent`.
        """
        with self.session() as conn:
            max_attempts = conn.execute(
                select(studies.c.max_attempts).where(studies.c.id == study_id)
            ).scalar_one()
            lost = conn.execute(
                select(trials.c.id, trials.c.number, trials.c.attempts, trials.c.worker)
                .where(
                    trials.c.study_id == study_id,
                    trials.c.status == "running",
                    trials.c.lease_expires_at < _now(conn),
                )
                .order_by(trials.c.number)
            ).all()
            requeued: list[int] = []
            gave_up: list[int] = []
            for row in lost:
                reason = (
                    f"attempt {row.attempts} lost: worker {row.worker} stopped renewing its "
                    "lease (killed, out of memory, or its machine was lost)"
                )
                still_lost = (
                    (trials.c.id == row.id)
                    & (trials.c.status == "running")
                    & (trials.c.attempts == row.attempts)
                )
                if row.attempts >= max_attempts:
                    values: dict[str, Any] = {
                        "status": "failed",
                        "finished_at": utcnow(),
                        "error": f"{reason}; gave up after {row.attempts} attempts "
                        f"(max_attempts={max_attempts})",
                    }
                    target = gave_up
                else:
                    values = {"status": "queued", "error": reason, "enqueued_at": None}
                    target = requeued
                values.update(lease_expires_at=None, worker=None)
                if conn.execute(update(trials).where(still_lost).values(values)).rowcount:
                    target.append(row.number)
        return Recovery(requeued=tuple(requeued), gave_up=tuple(gave_up))

    def queued_waiting(self, study_id: int, *, longer_than_s: float) -> list[int]:
        """Numbers of queued trials whose message was sent more than ``longer_than_s`` ago."""
        with self.session() as conn:
            cutoff = _now(conn) - timedelta(seconds=longer_than_s)
            return list(
                conn.execute(
                    select(trials.c.number)
                    .where(
                        trials.c.study_id == study_id,
                        trials.c.status == "queued",
                        trials.c.enqueued_at < cutoff,
                    )
                    .order_by(trials.c.number)
                ).scalars()
            )

    def mark_unsent(self, study_id: int, numbers: Iterable[int]) -> list[int]:
        """Forget the messages of these queued trials (they were lost); return those changed."""
        with self.session() as conn:
            return sorted(
                conn.execute(
                    update(trials)
                    .where(
                        trials.c.study_id == study_id,
                        trials.c.status == "queued",
                        trials.c.number.in_(list(numbers)),
                    )
                    .values(enqueued_at=None)
                    .returning(trials.c.number)
                ).scalars()
            )

    def counts(self, study_id: int) -> Counts:
        with self.session() as conn:
            rows = conn.execute(
                select(trials.c.status, func.count())
                .where(trials.c.study_id == study_id)
                .group_by(trials.c.status)
            ).all()
        by_status = {status: int(n) for status, n in rows}
        return Counts(
            total=sum(by_status.values()),
            **{s: by_status.get(s, 0) for s in ("queued", "running", "succeeded", "failed")},
        )

    def top_trials(self, study_id: int, k: int) -> list[TrialRecord]:
        """Return the best ``k`` succeeded trials: highest val_accuracy, then lowest val_loss."""
        with self.session() as conn:
            rows = conn.execute(
                select(trials)
                .where(trials.c.study_id == study_id, trials.c.status == "succeeded")
                .order_by(
                    trials.c.val_accuracy.desc(), trials.c.val_loss.asc(), trials.c.number.asc()
                )
                .limit(k)
            ).all()
        return [_trial(r) for r in rows]

    def get_trials(self, study_id: int, numbers: Iterable[int] | None = None) -> list[TrialRecord]:
        query = select(trials).where(trials.c.study_id == study_id).order_by(trials.c.number)
        if numbers is not None:
            query = query.where(trials.c.number.in_(list(numbers)))
        with self.session() as conn:
            return [_trial(r) for r in conn.execute(query)]

    def epochs(self, trial_id: int) -> list[EpochRecord]:
        with self.session() as conn:
            rows = conn.execute(
                select(trial_epochs)
                .where(trial_epochs.c.trial_id == trial_id)
                .order_by(trial_epochs.c.epoch)
            ).all()
        return [EpochRecord(r.epoch, r.loss, r.accuracy, r.val_loss, r.val_accuracy) for r in rows]


def _held(claimed: ClaimedTrial) -> ColumnElement[bool]:
    """True while ``claimed`` still holds its trial: running, under the same attempt."""
    return (
        (trials.c.id == claimed.trial_id)
        & (trials.c.status == "running")
        & (trials.c.attempts == claimed.attempt)
    )


def _reason(exc: SQLAlchemyError, url: str) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    reason = " ".join(text.split()) or type(exc).__name__
    # A driver may echo the connection string; never let a password through.
    for secret in {_password(url)} - {None, ""}:
        reason = reason.replace(str(secret), "***")
    return reason[:300]


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _aware(stamp: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _maybe_aware(stamp: datetime | None) -> datetime | None:
    return None if stamp is None else _aware(stamp)


def _study(row: Row[Any]) -> StudyRecord:
    return StudyRecord(
        id=row.id,
        name=row.name,
        created_at=_aware(row.created_at),
        seed=int(row.seed),
        space=dict(row.space),
        settings=dict(row.settings),
        dataset_hash=row.dataset_hash,
        status=row.status,
        max_attempts=int(row.max_attempts),
    )


def _trial(row: Row[Any]) -> TrialRecord:
    return TrialRecord(
        id=row.id,
        study_id=row.study_id,
        number=row.number,
        params=dict(row.params),
        status=row.status,
        attempts=row.attempts,
        worker=row.worker,
        device=row.device,
        started_at=_maybe_aware(row.started_at),
        finished_at=_maybe_aware(row.finished_at),
        duration_s=row.duration_s,
        val_loss=row.val_loss,
        val_accuracy=row.val_accuracy,
        test_loss=row.test_loss,
        test_accuracy=row.test_accuracy,
        error=row.error,
        enqueued_at=_maybe_aware(row.enqueued_at),
        heartbeat_at=_maybe_aware(row.heartbeat_at),
        lease_expires_at=_maybe_aware(row.lease_expires_at),
    )


def _check_same(
    study: StudyRecord,
    *,
    seed: int,
    space: Mapping[str, Any],
    settings: Mapping[str, Any],
    dataset_hash: str,
) -> None:
    """Refuse to extend an existing study with different inputs."""
    differences = []
    if study.space != dict(space):
        differences.append("search space")
    if study.dataset_hash != dataset_hash:
        differences.append("dataset")
    if study.settings != dict(settings):
        differences.append("settings")
    if study.seed != seed:
        differences.append(f"seed (stored {study.seed}, given {seed})")
    if differences:
        raise StudyConflictError(
            f"study {study.name!r} already exists with a different "
            f"{', '.join(differences)}; pass --study NEW_NAME to start a new study, "
            "or repeat the original flags to extend it"
        )
