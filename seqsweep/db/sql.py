"""Small dialect-neutral SQL helpers, and rows to frozen records, shared by the store's parts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, UnaryExpression, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from seqsweep.db.records import StudyRecord, TrialRecord
from seqsweep.db.schema import trials
from seqsweep.vocab import OBJECTIVE, Direction, Objective, StudyStatus, TrialStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


def db_now(conn: Connection) -> Any:
    """The clock that leases are written and judged by.

    On PostgreSQL that is the server's: workers on several machines share it,
    so their clock skew cannot expire a live lease. SQLite is one machine.
    """
    if conn.dialect.name == "postgresql":
        return func.now()
    return utcnow()


def aware(stamp: datetime) -> datetime:
    """Attach UTC to a naive datetime: SQLite hands them back, written in UTC."""
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def insert_for(conn: Connection, table: Any) -> Any:
    """An INSERT that supports ``on_conflict_do_*`` on this connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def objective_value(objective: Objective = OBJECTIVE) -> Any:
    """The objective's value as an SQL expression: its column (val_accuracy, val_loss), or
    the ``metrics`` JSON (val_auc, val_mae, val_rmse)."""
    if objective.metric in trials.c:
        return trials.c[objective.metric]
    return trials.c.metrics[objective.metric].as_float()


def best_first(objective: Objective = OBJECTIVE) -> tuple[UnaryExpression[Any], ...]:
    """What "best" means, as an ORDER BY: the study's objective (by default the highest
    val_accuracy), ties to lower val_loss, then the earlier trial. Every ranking (report,
    status, progress) sorts by this."""
    value = objective_value(objective)
    return (
        (value.desc() if objective.direction is Direction.MAXIMIZE else value.asc()).nulls_last(),
        trials.c.val_loss.asc().nulls_last(),
        trials.c.number.asc(),
    )


def maybe_aware(stamp: datetime | None) -> datetime | None:
    return None if stamp is None else aware(stamp)


def study_record(row: Row[Any]) -> StudyRecord:
    return StudyRecord(
        id=row.id,
        name=row.name,
        created_at=aware(row.created_at),
        seed=int(row.seed),
        space=dict(row.space),
        settings=dict(row.settings),
        dataset_hash=row.dataset_hash,
        status=StudyStatus(row.status),
        max_attempts=int(row.max_attempts),
    )


def trial_record(row: Row[Any]) -> TrialRecord:
    return TrialRecord(
        id=row.id,
        study_id=row.study_id,
        number=row.number,
        params=dict(row.params),
        status=TrialStatus(row.status),
        attempts=row.attempts,
        worker=row.worker,
        device=row.device,
        started_at=maybe_aware(row.started_at),
        finished_at=maybe_aware(row.finished_at),
        duration_s=row.duration_s,
        val_loss=row.val_loss,
        val_accuracy=row.val_accuracy,
        test_loss=row.test_loss,
        test_accuracy=row.test_accuracy,
        error=row.error,
        enqueued_at=maybe_aware(row.enqueued_at),
        heartbeat_at=maybe_aware(row.heartbeat_at),
        lease_expires_at=maybe_aware(row.lease_expires_at),
        pack=None if row.pack is None else tuple(int(n) for n in row.pack),
        metrics=None if row.metrics is None else {k: float(v) for k, v in row.metrics.items()},
    )
