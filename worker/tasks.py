"""The one Celery task: claim a trial, train it, write the outcome through the store.

The task is thin on purpose. The results DB decides what runs: a message for
a trial that is not ``queued`` (finished, or claimed by another worker after
a redelivery) is acknowledged without training anything.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from seqsweep.dataset import Splits
from seqsweep.db import ClaimedTrial, ResultStore
from seqsweep.errors import ConnectionFailedError, TrialError
from seqsweep.settings import TASK_NAME, StudySettings, lease_seconds
from seqsweep.urls import resolve_db_url
from worker.celery_app import app
from worker.lease import Lease
from worker.training import current_device, run_study_trial, study_splits

T = TypeVar("T")
#: A finished trial's result is worth waiting for: retry its write this long.
_WRITE_RETRY_S = (1, 2, 4, 8, 15, 30)

log = logging.getLogger("seqsweep.worker")

#: Decoded and split datasets of this process, most recently used last.
_SPLITS: OrderedDict[tuple[str, int, float, float], Splits] = OrderedDict()
_SPLITS_KEPT = 4


@dataclass(frozen=True)
class TrialRef:
    """The message payload: which trial of which study to run."""

    study_id: int
    study: str
    number: int

    @classmethod
    def parse(cls, payload: Any) -> TrialRef:
        if not isinstance(payload, dict):
            raise ValueError(f"payload must be a JSON object, got {type(payload).__name__}")
        study_id, number, study = (
            payload.get("study_id"),
            payload.get("number"),
            payload.get("study"),
        )
        for key, value in (("study_id", study_id), ("number", number)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"payload {key} must be a non-negative integer, got {value!r}")
        if not isinstance(study, str):
            raise ValueError(f"payload study must be a string, got {study!r}")
        return cls(study_id=study_id, study=study, number=number)  # type: ignore[arg-type]

    def to_payload(self) -> dict[str, Any]:
        return {"study_id": self.study_id, "study": self.study, "number": self.number}


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@app.task(name=TASK_NAME, bind=True, acks_late=True, max_retries=60)
def run_trial_task(self: Any, payload: Any) -> str:
    """Run the trial named by ``payload``; return what happened, for Celery's logs."""
    try:
        ref = TrialRef.parse(payload)
    except ValueError as exc:
        # A malformed message cannot succeed on retry: log it and let it be acked.
        log.error("rejected malformed trial message %r: %s", payload, exc)
        return "rejected"
    try:
        store = ResultStore.for_process(resolve_db_url(None))
        claimed = store.claim(ref.study_id, ref.number, worker_id(), lease_s=lease_seconds())
    except ConnectionFailedError as exc:
        # The trial is still queued in the DB: try the message again later.
        log.warning("study %s trial %d: %s; retrying", ref.study, ref.number, exc)
        raise self.retry(countdown=10) from None
    if claimed is None:
        log.info("study %s trial %d is not queued; nothing to do", ref.study, ref.number)
        return "skipped"
    return _train_and_record(store, claimed)


def _train_and_record(store: ResultStore, claimed: ClaimedTrial) -> str:
    label = f"study {claimed.study_name} trial {claimed.number} (attempt {claimed.attempt})"
    settings = StudySettings.from_dict(claimed.settings)
    with Lease(store, claimed, lease_seconds()) as lease:
        try:
            splits = _splits(store, claimed, settings)
            result = run_study_trial(
                claimed.params,
                splits,
                settings,
                study_seed=claimed.seed,
                number=claimed.number,
                should_stop=lambda: lease.lost,
            )
        except SoftTimeLimitExceeded:
            reason = f"time limit exceeded: the trial ran past {settings.trial_timeout_s:g} s"
        except TrialError as exc:
            reason = str(exc)
        except Exception as exc:  # any bug or backend error fails this trial, not the study
            log.exception("%s failed", label)
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if not _persist(lambda: store.finish_trial(claimed, result), label):
                log.warning("%s finished, but its claim had lapsed; result dropped", label)
                return "dropped"
            log.info(
                "%s succeeded: val_accuracy=%.4f in %.1f s",
                label,
                result.val_accuracy,
                result.duration_s,
            )
            return "succeeded"
        if not _persist(lambda: store.fail_trial(claimed, reason, device=_device_or_none()), label):
            log.warning("%s failed (%s), but its claim had lapsed; not recorded", label, reason)
            return "dropped"
    log.warning("%s failed: %s", label, reason)
    return "failed"


def _persist(write: Callable[[], T], label: str) -> T:
    """Run a result write, riding out a results DB outage of up to a minute."""
    for delay in _WRITE_RETRY_S:
        try:
            return write()
        except ConnectionFailedError as exc:
            log.warning("%s: cannot write the result, retrying in %d s: %s", label, delay, exc)
            time.sleep(delay)
    return write()


def _splits(store: ResultStore, claimed: ClaimedTrial, settings: StudySettings) -> Splits:
    key = (claimed.dataset_hash, claimed.seed, settings.val_fraction, settings.test_fraction)
    if key in _SPLITS:
        _SPLITS.move_to_end(key)
        return _SPLITS[key]
    data = store.load_dataset(claimed.dataset_hash)
    splits = study_splits(data, claimed.seed, settings)
    _SPLITS[key] = splits
    while len(_SPLITS) > _SPLITS_KEPT:
        _SPLITS.popitem(last=False)
    return splits


def _device_or_none() -> str | None:
    try:
        return current_device()
    except Exception:  # the device is a nicety on a failure record, never a second failure
        return None
