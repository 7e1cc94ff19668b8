"""The results store: every read and write of the results DB goes through here.

One session scope (:meth:`ResultStore.session`) commits, rolls back and closes,
and turns SQLAlchemy errors into seqsweep's own. Writes that a redelivered
message may repeat are idempotent: trial rows are keyed on (study_id, number)
and written with ``INSERT ... ON CONFLICT``. The trial's life from message to
result (claim, lease, finish, recovery) is :mod:`seqsweep.db.lifecycle`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from seqsweep.dataset import Dataset
from seqsweep.db.engine import make_engine
from seqsweep.db.lifecycle import TrialLifecycle
from seqsweep.db.migrate import upgrade
from seqsweep.db.overview import StudyOverview
from seqsweep.db.records import Counts, EpochRecord, StudyRecord, TrialRecord
from seqsweep.db.schema import datasets, studies, trial_epochs, trials
from seqsweep.db.sql import best_first, insert_for, study_record, trial_record, utcnow
from seqsweep.errors import (
    ConnectionFailedError,
    SeqsweepError,
    StoreError,
    StudyConflictError,
    UsageError,
)
from seqsweep.files import create_private
from seqsweep.settings import DEFAULT_MAX_ATTEMPTS, StudySettings
from seqsweep.urls import DB_ENV, mask_text, mask_url, sqlite_path
from seqsweep.vocab import StudyStatus, TrialStatus

#: New trials written per transaction when a study is created or extended (see
#: :meth:`ResultStore.create_study`): sampling and inserting this many holds SQLite's
#: write lock for about 0.5 s on the 2-core test machine.
INSERT_BATCH = 5000


class ResultStore(TrialLifecycle, StudyOverview):
    """Read and write studies, trials and epochs in one results DB."""

    _per_process: ClassVar[dict[str, tuple[int, ResultStore]]] = {}

    def __init__(self, url: str, *, migrate: bool = True, create: bool = True) -> None:
        """Open the results DB at ``url``; ``create=False`` refuses a SQLite file that is missing.

        Commands that only read results pass ``create=False``: a typo in a path or the
        wrong folder must not leave an empty ``seqsweep.db`` behind and report no studies.
        """
        self.url = url
        self.masked_url = mask_url(url)
        path = sqlite_path(url)
        if not create and path is not None and not path.exists():
            raise UsageError(
                f"no results DB at {path}: the file does not exist; run the command where "
                f"launch wrote it, or pass --db URL (or set ${DB_ENV})"
            )
        self._engine: Engine = make_engine(url)
        if path is not None and create:
            create_private(path)  # it holds the whole dataset: 0600, not the umask's 0644
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
            if "file is not a database" in str(exc.orig):  # the user's --db names another file
                raise UsageError(
                    f"results DB {self.masked_url}: the file is not a SQLite database; "
                    "pass --db with the file launch wrote (or a new file name)"
                ) from None
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
                insert_for(c, datasets).values(row).on_conflict_do_nothing(index_elements=["hash"])
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
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> tuple[StudyRecord, list[int]]:
        """Create study ``name`` or load it if it exists, and add missing trials.

        A study of up to ``INSERT_BATCH`` new trials is written in one transaction,
        so a failure leaves no half-written study. A larger one is written as the
        study, then batches of trials, each sampled outside any transaction and
        inserted in its own: SQLite's write lock is held for well under a second at
        a time, and other commands go on. Should it stop halfway, the same launch
        adds the missing trials (messages are sent only after all are in). An
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
                insert_for(conn, studies)
                .values(
                    name=name,
                    created_at=utcnow(),
                    seed=fresh_seed if seed is None else seed,
                    space=dict(space),
                    settings=dict(settings),
                    dataset_hash=digest,
                    status=StudyStatus.RUNNING,
                    max_attempts=max_attempts,
                )
                .on_conflict_do_nothing(index_elements=["name"])
            )
            study = study_record(conn.execute(select(studies).where(studies.c.name == name)).one())
            if study.status == StudyStatus.CANCELLED:
                raise StudyConflictError(
                    f"study {name!r} was cancelled; pass --study NEW_NAME to start a new study "
                    f"(see `python -m scheduler status {name}` for what it finished)"
                )
            _check_same(
                study,
                seed=study.seed if seed is None else seed,
                space=space,
                settings=settings,
                dataset_hash=digest,
            )
            existing = self._numbers(conn, study.id)
            missing = [n for n in range(trials) if n not in existing]
            small = len(missing) <= INSERT_BATCH
            added = self._add_trials(conn, study, missing, sample) if small else []
            conn.execute(
                update(studies)
                .where(studies.c.id == study.id)
                .values(
                    max_attempts=max_attempts,
                    status=StudyStatus.RUNNING if missing else studies.c.status,
                )
            )
            study = study_record(
                conn.execute(select(studies).where(studies.c.id == study.id)).one()
            )
        if not small:
            for start in range(0, len(missing), INSERT_BATCH):
                batch = missing[start : start + INSERT_BATCH]
                rows = [self._trial_row(study, n, sample) for n in batch]  # outside the lock
                with self.session() as conn:
                    added += self._insert_trials(conn, rows)
        return study, sorted(added)

    def _add_trials(
        self,
        conn: Connection,
        study: StudyRecord,
        numbers: list[int],
        sample: Callable[[int, int], Mapping[str, Any]],
    ) -> list[int]:
        return self._insert_trials(conn, [self._trial_row(study, n, sample) for n in numbers])

    def add_trials(self, study_id: int, params: Mapping[int, Mapping[str, Any]]) -> list[int]:
        """Add queued trials ``{number: params}`` to a study; return the numbers added.

        For samplers that pick each trial from the finished ones. A number that exists
        keeps its row (a concurrent launch got there first); a cancelled study gets
        nothing; a study that a worker marked completed between two trials runs again.
        """
        with self.session() as conn:
            status = conn.execute(
                select(studies.c.status).where(studies.c.id == study_id)
            ).scalar_one()
            if status == StudyStatus.CANCELLED:
                return []
            rows = [
                {
                    "study_id": study_id,
                    "number": number,
                    "params": dict(values),
                    "status": TrialStatus.QUEUED,
                    "attempts": 0,
                }
                for number, values in params.items()
            ]
            added = self._insert_trials(conn, rows)
            if added:
                conn.execute(
                    update(studies)
                    .where(studies.c.id == study_id, studies.c.status == StudyStatus.COMPLETED)
                    .values(status=StudyStatus.RUNNING)
                )
        return added

    @staticmethod
    def _numbers(conn: Connection, study_id: int) -> set[int]:
        found = conn.execute(select(trials.c.number).where(trials.c.study_id == study_id))
        return set(found.scalars())

    @staticmethod
    def _trial_row(
        study: StudyRecord, number: int, sample: Callable[[int, int], Mapping[str, Any]]
    ) -> dict[str, Any]:
        return {
            "study_id": study.id,
            "number": number,
            "params": dict(sample(study.seed, number)),
            "status": TrialStatus.QUEUED,
            "attempts": 0,
        }

    @staticmethod
    def _insert_trials(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        # ON CONFLICT keeps a concurrent launch of the same study from failing
        # or duplicating rows; the unique key is (study_id, number).
        stmt = (
            insert_for(conn, trials)
            .on_conflict_do_nothing(index_elements=["study_id", "number"])
            .returning(trials.c.number)
        )
        added: list[int] = []
        for start in range(0, len(rows), 1000):
            added.extend(conn.execute(stmt, rows[start : start + 1000]).scalars())
        return sorted(added)

    def get_study(self, name: str) -> StudyRecord | None:
        with self.session() as conn:
            row = conn.execute(select(studies).where(studies.c.name == name)).one_or_none()
        return None if row is None else study_record(row)

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
            return [study_record(r) for r in conn.execute(select(studies).order_by(studies.c.id))]

    def complete_study(self, study_id: int) -> None:
        """Mark a running study completed; a cancelled one stays cancelled."""
        with self.session() as conn:
            conn.execute(
                update(studies)
                .where(studies.c.id == study_id, studies.c.status == StudyStatus.RUNNING)
                .values(status=StudyStatus.COMPLETED)
            )

    # -- trials ------------------------------------------------------------

    def numbers_in_state(self, study_id: int, status: TrialStatus) -> list[int]:
        with self.session() as conn:
            return list(
                conn.execute(
                    select(trials.c.number)
                    .where(trials.c.study_id == study_id, trials.c.status == status)
                    .order_by(trials.c.number)
                ).scalars()
            )

    def counts(self, study_id: int) -> Counts:
        with self.session() as conn:
            rows = conn.execute(
                select(trials.c.status, func.count())
                .where(trials.c.study_id == study_id)
                .group_by(trials.c.status)
            ).all()
        return Counts.from_states({status: int(n) for status, n in rows})

    def top_trials(self, study_id: int, k: int) -> list[TrialRecord]:
        """The best ``k`` succeeded trials by the study's objective (ties: lower val_loss)."""
        with self.session() as conn:
            stored = conn.execute(select(studies.c.settings).where(studies.c.id == study_id))
            objective = StudySettings.from_dict(dict(stored.scalar_one())).ranking
            rows = conn.execute(
                select(trials)
                .where(trials.c.study_id == study_id, trials.c.status == TrialStatus.SUCCEEDED)
                .order_by(*best_first(objective))
                .limit(k)
            ).all()
        return [trial_record(r) for r in rows]

    def get_trials(self, study_id: int, numbers: Iterable[int] | None = None) -> list[TrialRecord]:
        query = select(trials).where(trials.c.study_id == study_id).order_by(trials.c.number)
        if numbers is not None:
            query = query.where(trials.c.number.in_(list(numbers)))
        with self.session() as conn:
            return [trial_record(r) for r in conn.execute(query)]

    def epochs_trained(self, study_id: int) -> int:
        """Epochs trained over all of a study's trials: its rows in ``trial_epochs``."""
        with self.session() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(trial_epochs.join(trials, trials.c.id == trial_epochs.c.trial_id))
                    .where(trials.c.study_id == study_id)
                ).scalar_one()
            )

    def epochs(self, trial_id: int) -> list[EpochRecord]:
        return self.epochs_of([trial_id]).get(trial_id, [])

    def epochs_of(self, trial_ids: Iterable[int]) -> dict[int, list[EpochRecord]]:
        """Per-epoch metrics of many trials, by trial id, in a few queries."""
        ids = list(trial_ids)
        found: dict[int, list[EpochRecord]] = {}
        with self.session() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    select(trial_epochs)
                    .where(trial_epochs.c.trial_id.in_(ids[start : start + 500]))
                    .order_by(trial_epochs.c.trial_id, trial_epochs.c.epoch)
                )
                for r in rows:
                    found.setdefault(r.trial_id, []).append(
                        EpochRecord(r.epoch, r.loss, r.accuracy, r.val_loss, r.val_accuracy)
                    )
        return found


def _reason(exc: SQLAlchemyError, url: str) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    # A driver may echo the connection string or the password; never let either through.
    reason = " ".join(mask_text(text, url).split()) or type(exc).__name__
    return reason[:300]


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
    # Settings added since the study was stored (task, objective) compare as their defaults.
    stored = StudySettings.from_dict(study.settings).to_dict()
    given = StudySettings.from_dict(dict(settings)).to_dict()
    changed = [
        f"{key}: stored {stored[key]}, given {given[key]}"
        for key in stored
        if stored[key] != given[key]
    ]
    if changed:
        differences.append(f"settings ({'; '.join(changed)})")
    if study.seed != seed:
        differences.append(f"seed (stored {study.seed}, given {seed})")
    if differences:
        raise StudyConflictError(
            f"study {study.name!r} already exists with a different "
            f"{', '.join(differences)}; pass --study NEW_NAME to start a new study, "
            "or repeat the original flags to extend it"
        )
