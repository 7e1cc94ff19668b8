"""A trial's life in the results DB: sent, claimed, renewed, finished, failed or lost.

These are the writes that make results exactly-once when messages are not:
a worker must claim a trial (queued -> running, one conditional UPDATE)
before training it, renews the claim's lease while it trains, and every later
write presents the claim's attempt number, so a worker whose lease expired can
neither renew it nor record a result. :class:`~seqsweep.db.store.ResultStore`
mixes this in; the session scope it relies on lives there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.engine import Connection

from seqsweep.db.records import Cancellation, ClaimedTrial, EpochRecord, Recovery, TrialResult
from seqsweep.db.schema import studies, trial_epochs, trials
from seqsweep.db.sql import aware, db_now, insert_for, utcnow
from seqsweep.errors import MessageError, UsageError
from seqsweep.vocab import StudyStatus, TrialStatus

_ERROR_TEXT_LIMIT = 4000
#: Trials sent per transaction by :meth:`TrialLifecycle.send_unsent`.
_SEND_BATCH = 500


class TrialLifecycle:
    """The trial state machine, as methods of the results store."""

    if TYPE_CHECKING:  # provided by ResultStore

        def session(self) -> AbstractContextManager[Connection]: ...

    def send_unsent(
        self,
        study_id: int,
        send: Callable[[list[int]], object],
        order: Callable[[dict[int, dict[str, Any]]], list[int]] | None = None,
    ) -> int:
        """Hand each queued trial that has no message yet to ``send``; return how many.

        ``order`` (number -> params of a batch, to its numbers in sending order) decides
        the order within each batch of up to ``_SEND_BATCH`` trials; default: by number.

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
                        trials.c.status == TrialStatus.QUEUED,
                        trials.c.enqueued_at.is_(None),
                    )
                    .order_by(trials.c.number)
                    .limit(_SEND_BATCH)
                )
                batch = {
                    row.number: dict(row.params)
                    for row in conn.execute(
                        update(trials)
                        .where(trials.c.id.in_(unsent), trials.c.enqueued_at.is_(None))
                        .values(enqueued_at=db_now(conn))
                        .returning(trials.c.number, trials.c.params)
                    )
                }
                if not batch:
                    return sent
                numbers = sorted(batch) if order is None else order(batch)
                send(numbers)
            sent += len(numbers)

    def claim(
        self,
        study_id: int,
        number: int,
        worker: str,
        *,
        lease_s: float,
        study_name: str | None = None,
    ) -> ClaimedTrial | None:
        """Move trial (study_id, number) from queued to running; None if it is not queued.

        The conditional UPDATE is the claim: of two workers that get the same
        message, exactly one sees a row come back. The winner holds a lease of
        ``lease_s`` seconds and must renew it with :meth:`heartbeat`. With
        ``study_name`` (the name a message carries), a study of another name, or
        none, raises MessageError before anything changes: a forged message spends
        no attempt.
        """
        with self.session() as conn:
            if study_name is not None:
                stored = conn.execute(
                    select(studies.c.name).where(studies.c.id == study_id)
                ).scalar_one_or_none()
                if stored != study_name:
                    found = "no such study" if stored is None else f"study {stored!r}"
                    raise MessageError(
                        f"the message names study {study_name!r}, but study id {study_id} is "
                        f"{found}; it was not sent by seqsweep"
                    )
            claimed = conn.execute(
                update(trials)
                .where(
                    trials.c.study_id == study_id,
                    trials.c.number == number,
                    trials.c.status == TrialStatus.QUEUED,
                )
                .values(_claim_values(db_now(conn), worker, lease_s))
                .returning(trials.c.id, trials.c.number, trials.c.params, trials.c.attempts)
            ).one_or_none()
            if claimed is None:
                return None
            _forget_lost_epochs(conn, [claimed])
            study = conn.execute(select(studies).where(studies.c.id == study_id)).one()
        return _claimed(study, claimed)

    def claim_partners(
        self,
        lead: ClaimedTrial,
        worker: str,
        *,
        lease_s: float,
        limit: int,
        fits: Callable[[dict[str, Any]], bool],
        pick: Callable[[list[dict[str, Any]]], list[int]] | None = None,
    ) -> list[ClaimedTrial]:
        """Claim up to ``limit`` more queued trials of ``lead``'s study whose params ``fits``.

        ``pick`` (the params of every queued trial of the study, by number, to the
        positions to claim) chooses among them, e.g. within a cost budget; default:
        the first that fit.

        Packed training uses this: a worker that holds ``lead`` takes trials that can
        train in the same computation. One transaction, and the same conditional
        UPDATE as :meth:`claim`, so a trial another worker claimed meanwhile is
        simply not returned. Their own messages later find them taken and ack.
        """
        if limit <= 0:
            return []
        with self.session() as conn:
            queued = conn.execute(
                select(trials.c.id, trials.c.params)
                .where(trials.c.study_id == lead.study_id, trials.c.status == TrialStatus.QUEUED)
                .order_by(trials.c.number)
            ).all()
            if pick is not None:
                queued = [queued[i] for i in pick([dict(row.params) for row in queued])]
            ids = [row.id for row in queued if fits(dict(row.params))][:limit]
            if not ids:
                return []
            rows = conn.execute(
                update(trials)
                .where(trials.c.id.in_(ids), trials.c.status == TrialStatus.QUEUED)
                .values(_claim_values(db_now(conn), worker, lease_s))
                .returning(trials.c.id, trials.c.number, trials.c.params, trials.c.attempts)
            ).all()
            _forget_lost_epochs(conn, rows)
            study = conn.execute(select(studies).where(studies.c.id == lead.study_id)).one()
        return sorted((_claimed(study, row) for row in rows), key=lambda c: c.number)

    def heartbeat(self, claimed: ClaimedTrial, *, lease_s: float) -> bool:
        """Renew the lease of a claimed trial; False if this claim has lost it."""
        with self.session() as conn:
            now = db_now(conn)
            return bool(
                conn.execute(
                    update(trials)
                    .where(_held(claimed))
                    .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
                ).rowcount
                == 1
            )

    def record_epoch(
        self, epoch: int, rows: Sequence[tuple[ClaimedTrial, EpochRecord]], metric: str
    ) -> dict[int, float]:
        """Write one epoch of trials that train together; return what every trial of their
        study reached at that epoch: trial number -> ``metric`` (these trials included).

        One short transaction: the rows of trials whose claim still holds, then one
        query over the study's ``trial_epochs`` at ``epoch`` (its primary key). A pruner
        decides from what comes back, so decisions hold across workers.
        """
        if not rows:
            return {}
        study_id = rows[0][0].study_id
        column = trial_epochs.c[metric]
        with self.session() as conn:
            held = set(
                conn.execute(select(trials.c.id).where(or_(*(_held(c) for c, _ in rows)))).scalars()
            )
            written = [_epoch_row(c.trial_id, e) for c, e in rows if c.trial_id in held]
            if written:
                conn.execute(_upsert_epochs(conn), written)
            reached = conn.execute(
                select(trials.c.number, column)
                .select_from(trial_epochs.join(trials, trials.c.id == trial_epochs.c.trial_id))
                .where(
                    trials.c.study_id == study_id,
                    trial_epochs.c.epoch == epoch,
                    column.is_not(None),
                )
            ).all()
        return {int(n): float(v) for n, v in reached}

    def finish_trial(self, claimed: ClaimedTrial, result: TrialResult) -> bool:
        """Record a successful (or pruned) run; False if this claim no longer holds the trial."""
        trial_id = claimed.trial_id
        with self.session() as conn:
            _lock_study(conn, claimed.study_id)
            done = conn.execute(
                update(trials)
                .where(_held(claimed))
                .values(
                    status=TrialStatus.PRUNED if result.pruned else TrialStatus.SUCCEEDED,
                    finished_at=utcnow(),
                    duration_s=result.duration_s,
                    device=result.device,
                    val_loss=result.val_loss,
                    val_accuracy=result.val_accuracy,
                    test_loss=result.test_loss,
                    test_accuracy=result.test_accuracy,
                    error=None,
                    lease_expires_at=None,
                    pack=None if result.pack is None else list(result.pack),
                    metrics=dict(result.metrics) or None,
                )
            ).rowcount
            if done != 1:
                return False
            if result.epochs:
                conn.execute(_upsert_epochs(conn), [_epoch_row(trial_id, e) for e in result.epochs])
            _complete_if_done(conn, claimed.study_id)
        return True

    def fail_trial(self, claimed: ClaimedTrial, error: str, *, device: str | None = None) -> bool:
        """Record a failed run with its reason; False if this claim no longer holds the trial."""
        with self.session() as conn:
            _lock_study(conn, claimed.study_id)
            values: dict[str, Any] = {
                "status": TrialStatus.FAILED,
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
                values["duration_s"] = (utcnow() - aware(started)).total_seconds()
            if conn.execute(update(trials).where(_held(claimed)).values(values)).rowcount != 1:
                return False
            # A pruner's per-epoch rows go with the failure: a failed trial has no epochs.
            conn.execute(delete(trial_epochs).where(trial_epochs.c.trial_id == claimed.trial_id))
            _complete_if_done(conn, claimed.study_id)
        return True

    def recover_lost(self, study_id: int) -> Recovery:
        """Requeue running trials whose lease has expired, or fail them after max attempts.

        In a cancelled study they are cancelled instead.

        An expired lease means the worker stopped renewing it: it was killed,
        ran out of memory, or lost its machine. The requeued trials need new
        messages: see :meth:`send_unsent`.
        """
        with self.session() as conn:
            max_attempts, study_status = conn.execute(
                select(studies.c.max_attempts, studies.c.status)
                .where(studies.c.id == study_id)
                .with_for_update()  # see _lock_study
            ).one()
            lost = conn.execute(
                select(trials.c.id, trials.c.number, trials.c.attempts, trials.c.worker)
                .where(
                    trials.c.study_id == study_id,
                    trials.c.status == TrialStatus.RUNNING,
                    trials.c.lease_expires_at < db_now(conn),
                )
                .order_by(trials.c.number)
            ).all()
            requeued: list[int] = []
            gave_up: list[int] = []
            cancelled: list[int] = []
            for row in lost:
                reason = (
                    f"attempt {row.attempts} lost: worker {row.worker} stopped renewing its "
                    "lease (killed, out of memory, or its machine was lost)"
                )
                still_lost = (
                    (trials.c.id == row.id)
                    & (trials.c.status == TrialStatus.RUNNING)
                    & (trials.c.attempts == row.attempts)
                )
                if study_status == StudyStatus.CANCELLED:
                    values: dict[str, Any] = {
                        "status": TrialStatus.CANCELLED,
                        "finished_at": utcnow(),
                        "error": f"{reason}; not requeued: the study was cancelled",
                    }
                    target = cancelled
                elif row.attempts >= max_attempts:
                    values = {
                        "status": TrialStatus.FAILED,
                        "finished_at": utcnow(),
                        "error": f"{reason}; gave up after {row.attempts} attempts "
                        f"(max_attempts={max_attempts})",
                    }
                    target = gave_up
                else:
                    values = {"status": TrialStatus.QUEUED, "error": reason, "enqueued_at": None}
                    target = requeued
                if target is requeued:
                    # A cancel committed since the status was read wins; the
                    # next pass cancels this trial instead.
                    still_lost = (
                        still_lost
                        & select(studies.c.id)
                        .where(studies.c.id == study_id, studies.c.status != StudyStatus.CANCELLED)
                        .exists()
                    )
                values.update(lease_expires_at=None, worker=None)
                if conn.execute(update(trials).where(still_lost).values(values)).rowcount:
                    target.append(row.number)
            _complete_if_done(conn, study_id)
        return Recovery(
            requeued=tuple(requeued), gave_up=tuple(gave_up), cancelled=tuple(cancelled)
        )

    def cancel(self, study_id: int) -> Cancellation:
        """Cancel the study: its queued trials will not run; running ones may finish.

        Workers claim only ``queued`` trials, so the messages already in the
        broker are acked without training. One transaction, so a trial is
        either claimed before the cancel (and finishes) or cancelled.
        """
        with self.session() as conn:
            # Only a running study: a completed one stays completed, so it can be extended.
            changed = conn.execute(
                update(studies)
                .where(studies.c.id == study_id, studies.c.status == StudyStatus.RUNNING)
                .values(status=StudyStatus.CANCELLED)
            ).rowcount
            if changed != 1:
                row = conn.execute(
                    select(studies.c.name, studies.c.status).where(studies.c.id == study_id)
                ).one()
                raise UsageError(
                    f"study {row.name} is {row.status}, not running: nothing to cancel "
                    "(a completed study can still be extended with launch --trials N)"
                )
            cancelled = conn.execute(
                update(trials)
                .where(trials.c.study_id == study_id, trials.c.status == TrialStatus.QUEUED)
                .values(
                    status=TrialStatus.CANCELLED,
                    finished_at=utcnow(),
                    error="cancelled before it ran",
                    enqueued_at=None,
                )
                .returning(trials.c.number)
            ).scalars()
            numbers = tuple(sorted(cancelled))
            running = conn.execute(
                select(trials.c.number)
                .where(trials.c.study_id == study_id, trials.c.status == TrialStatus.RUNNING)
                .order_by(trials.c.number)
            ).scalars()
            return Cancellation(cancelled=numbers, running=tuple(running))

    def queued_waiting(self, study_id: int, *, longer_than_s: float) -> list[int]:
        """Numbers of queued trials whose message was sent more than ``longer_than_s`` ago."""
        with self.session() as conn:
            cutoff = db_now(conn) - timedelta(seconds=longer_than_s)
            return list(
                conn.execute(
                    select(trials.c.number)
                    .where(
                        trials.c.study_id == study_id,
                        trials.c.status == TrialStatus.QUEUED,
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
                        trials.c.status == TrialStatus.QUEUED,
                        trials.c.number.in_(list(numbers)),
                    )
                    .values(enqueued_at=None)
                    .returning(trials.c.number)
                ).scalars()
            )


def _forget_lost_epochs(conn: Connection, claimed: Sequence[Any]) -> None:
    """Drop the epochs an earlier, lost attempt wrote as they ended (a pruner's): the new
    attempt writes its own, and may stop sooner."""
    again = [row.id for row in claimed if row.attempts > 1]
    if again:
        conn.execute(delete(trial_epochs).where(trial_epochs.c.trial_id.in_(again)))


def _upsert_epochs(conn: Connection) -> Any:
    """Insert epoch rows; a row a lost attempt of the same trial wrote is overwritten."""
    stmt = insert_for(conn, trial_epochs)
    return stmt.on_conflict_do_update(
        index_elements=["trial_id", "epoch"],
        set_={c: stmt.excluded[c] for c in ("loss", "accuracy", "val_loss", "val_accuracy")},
    )


def _epoch_row(trial_id: int, e: EpochRecord) -> dict[str, Any]:
    return {
        "trial_id": trial_id,
        "epoch": e.epoch,
        "loss": e.loss,
        "accuracy": e.accuracy,
        "val_loss": e.val_loss,
        "val_accuracy": e.val_accuracy,
    }


def _lock_study(conn: Connection, study_id: int) -> None:
    """Take the study's row lock before recording an outcome.

    Outcomes of one study are then recorded one after another, so of two workers that
    finish a study's last two trials at once, the second sees the first's trial
    finished and completes the study (on PostgreSQL, READ COMMITTED alone lets each
    see the other's trial still running). SQLite's ``BEGIN IMMEDIATE`` already
    serializes every write.
    """
    conn.execute(select(studies.c.id).where(studies.c.id == study_id).with_for_update())


def _complete_if_done(conn: Connection, study_id: int) -> None:
    """Mark a running study completed once none of its trials is queued or running.

    Whoever records a study's last outcome (a worker's result, a recovery that gives a
    trial up) completes it in the same transaction: a detached study completes with no
    ``launch`` waiting for it. A cancelled study stays cancelled.
    """
    unfinished = (
        select(trials.c.id)
        .where(
            trials.c.study_id == study_id,
            trials.c.status.in_([s for s in TrialStatus if not s.is_finished]),
        )
        .exists()
    )
    conn.execute(
        update(studies)
        .where(studies.c.id == study_id, studies.c.status == StudyStatus.RUNNING, ~unfinished)
        .values(status=StudyStatus.COMPLETED)
    )


def _held(claimed: ClaimedTrial) -> ColumnElement[bool]:
    """True while ``claimed`` still holds its trial: running, under the same attempt."""
    return (
        (trials.c.id == claimed.trial_id)
        & (trials.c.status == TrialStatus.RUNNING)
        & (trials.c.attempts == claimed.attempt)
    )


def _claim_values(now: Any, worker: str, lease_s: float) -> dict[str, Any]:
    """The columns a claim sets: running, one more attempt, a fresh lease."""
    return {
        "status": TrialStatus.RUNNING,
        "attempts": trials.c.attempts + 1,
        "worker": worker,
        "started_at": utcnow(),
        "finished_at": None,
        "error": None,
        "pack": None,
        "heartbeat_at": now,
        "lease_expires_at": now + timedelta(seconds=lease_s),
    }


def _claimed(study: Any, row: Any) -> ClaimedTrial:
    return ClaimedTrial(
        trial_id=row.id,
        study_id=study.id,
        study_name=study.name,
        number=int(row.number),
        params=dict(row.params),
        seed=int(study.seed),
        settings=dict(study.settings),
        dataset_hash=study.dataset_hash,
        attempt=int(row.attempts),
    )
