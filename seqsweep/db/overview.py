"""Read-only summaries for ``status`` and ``report``: every study at a glance, one in
detail, and a digest of a study's results.

Each summary is one grouped query, so ``status`` stays fast on studies of
thousands of trials and never holds a lock that workers wait on.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, and_, cast, func, select, true
from sqlalchemy.engine import Connection

from seqsweep.db.records import Counts, StudySummary, TrialRecord, WorkerCounts
from seqsweep.db.schema import studies, trials
from seqsweep.db.sql import aware, best_first, objective_value, trial_record
from seqsweep.settings import StudySettings
from seqsweep.vocab import Objective, StudyStatus, TrialStatus


class StudyOverview:
    """Summaries of studies, as methods of the results store."""

    if TYPE_CHECKING:  # provided by ResultStore

        def session(self) -> AbstractContextManager[Connection]: ...

    def study_summaries(self, study_id: int | None = None) -> list[StudySummary]:
        """Every study (or only ``study_id``), oldest first, with counts per state and best."""
        only_study = true() if study_id is None else studies.c.id == study_id
        only_trials = true() if study_id is None else trials.c.study_id == study_id
        with self.session() as conn:
            names = conn.execute(
                select(
                    studies.c.id,
                    studies.c.name,
                    studies.c.created_at,
                    studies.c.status,
                    studies.c.settings,
                )
                .where(only_study)
                .order_by(studies.c.id)
            ).all()
            per_state = conn.execute(
                select(trials.c.study_id, trials.c.status, func.count())
                .where(only_trials)
                .group_by(trials.c.study_id, trials.c.status)
            ).all()
            objectives = {r.id: StudySettings.from_dict(dict(r.settings)).ranking for r in names}
            best: dict[int, tuple[int, float | None, float | None]] = {}
            for objective in set(objectives.values()):  # one query per kind of objective
                ids = [i for i, o in objectives.items() if o == objective]
                best.update(_best_per_study(conn, trials.c.study_id.in_(ids), objective))
        counts: dict[int, dict[str, int]] = {}
        for study_id, status, n in per_state:
            counts.setdefault(study_id, {})[status] = int(n)
        summaries = []
        for row in names:
            number, accuracy, value = best.get(row.id, (None, None, None))
            summaries.append(
                StudySummary(
                    name=row.name,
                    created_at=aware(row.created_at),
                    status=StudyStatus(row.status),
                    counts=Counts.from_states(counts.get(row.id, {})),
                    best_number=number,
                    best_val_accuracy=accuracy,
                    objective=objectives[row.id],
                    best_value=value,
                )
            )
        return summaries

    def worker_counts(self, study_id: int) -> list[WorkerCounts]:
        """Per worker process (``host:pid``) of a study: succeeded, pruned, failed and
        running trials."""
        with self.session() as conn:
            rows = conn.execute(
                select(trials.c.worker, trials.c.status, func.count())
                .where(trials.c.study_id == study_id, trials.c.worker.is_not(None))
                .group_by(trials.c.worker, trials.c.status)
            ).all()
        by_worker: dict[str, dict[str, int]] = {}
        for worker, status, n in rows:
            by_worker.setdefault(worker, {})[status] = int(n)
        return [
            WorkerCounts(
                worker=worker,
                succeeded=states.get(TrialStatus.SUCCEEDED, 0),
                pruned=states.get(TrialStatus.PRUNED, 0),
                failed=states.get(TrialStatus.FAILED, 0),
                running=states.get(TrialStatus.RUNNING, 0),
            )
            for worker, states in sorted(by_worker.items())
        ]

    def results_digest(self, study_id: int) -> str:
        """A hash of the succeeded trials' numbers, stored parameters and final metrics.

        It changes when a trial succeeds or a succeeded trial's parameters or metrics
        change, and stays the same otherwise. The JSON columns are hashed as the DB's
        text: no JSON is decoded and no record built, which is what reading every
        trial of a large study costs (``report`` keys its cached ranking on this).
        """
        with self.session() as conn:
            rows = conn.execute(
                select(
                    trials.c.number,
                    cast(trials.c.params, Text),
                    cast(trials.c.metrics, Text),
                    trials.c.val_loss,
                    trials.c.val_accuracy,
                    trials.c.test_loss,
                    trials.c.test_accuracy,
                )
                .where(trials.c.study_id == study_id, trials.c.status == TrialStatus.SUCCEEDED)
                .order_by(trials.c.number)
            ).all()
        return hashlib.sha256(json.dumps([tuple(r) for r in rows]).encode()).hexdigest()

    def last_failures(self, study_id: int, limit: int) -> list[TrialRecord]:
        """The study's most recently failed trials, newest first, with their errors."""
        with self.session() as conn:
            rows = conn.execute(
                select(trials)
                .where(trials.c.study_id == study_id, trials.c.status == TrialStatus.FAILED)
                .order_by(trials.c.finished_at.desc(), trials.c.number.desc())
                .limit(limit)
            ).all()
        return [trial_record(r) for r in rows]


def _best_per_study(
    conn: Connection, where: Any, objective: Objective
) -> dict[int, tuple[int, float | None, float | None]]:
    """study id -> (number, val_accuracy, objective value) of its best succeeded trial."""
    value = objective_value(objective)
    ranked = (
        select(
            trials.c.study_id,
            trials.c.number,
            trials.c.val_accuracy,
            value.label("value"),
            func.row_number()
            .over(partition_by=trials.c.study_id, order_by=best_first(objective))
            .label("rank"),
        )
        .where(and_(where, trials.c.status == TrialStatus.SUCCEEDED, value.is_not(None)))
        .subquery()
    )
    rows = conn.execute(
        select(ranked.c.study_id, ranked.c.number, ranked.c.val_accuracy, ranked.c.value).where(
            ranked.c.rank == 1
        )
    ).all()
    return {r.study_id: (r.number, r.val_accuracy, r.value) for r in rows}
