"""The one Celery task: claim a trial, train it, write the outcome through the store.

The task is thin on purpose. The results DB decides what runs: a message for
a trial that is not ``queued`` (finished, trained in another trial's pack, or
claimed by another worker after a redelivery) is acknowledged without training
anything. With packing on, the claimed trial brings queued trials of its shape
along (``seqsweep.trial``); each still gets its own outcome.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request

from seqsweep.dataset import Splits
from seqsweep.db import ClaimedTrial, ResultStore, TrialResult
from seqsweep.errors import ConnectionFailedError, MessageError, TrialError
from seqsweep.messages import TASK_NAME, TrialMessage, short_repr
from seqsweep.settings import (
    DEFAULT_PACK_SIZE,
    HARD_LIMIT_GRACE_S,
    MAX_TRIAL_TIMEOUT_S,
    WITNESS_ENV,
    StudySettings,
)
from seqsweep.trial import pack_key, study_splits, train
from seqsweep.trial.alone import current_device
from seqsweep.trial.autopack import auto_pack_size
from seqsweep.trial.cost import DataShape, pack_positions
from seqsweep.trial.judge import epoch_judge
from worker import warm
from worker.celery_app import app
from worker.config import worker_config
from worker.lease import Lease

T = TypeVar("T")
#: A finished trial's result is worth waiting for: retry its write this long.
_WRITE_RETRY_S = (1, 2, 4, 8, 15, 30)

log = logging.getLogger("seqsweep.worker")

#: Decoded and split datasets of this process, most recently used last.
_SPLITS: OrderedDict[tuple[str, int, float, float], Splits] = OrderedDict()
_SPLITS_KEPT = 4


class Outcome(StrEnum):
    """What one message did to one trial, as the task reports it to Celery's log."""

    SUCCEEDED = "succeeded"
    #: Stopped early by the study's pruner, and recorded so.
    PRUNED = "pruned"
    FAILED = "failed"
    #: Trained, but the claim had lapsed (the trial was requeued): the result is refused.
    DROPPED = "dropped"
    #: The trial was not queued: finished, trained in a pack, or claimed elsewhere.
    SKIPPED = "skipped"
    #: Not a seqsweep trial message.
    REJECTED = "rejected"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


#: Message headers a sender controls that would change how or when a trial runs. Anyone
#: who can write to the broker can set them, so a worker ignores them: the time limit
#: comes from the study's stored settings (:func:`_time_limit`), and a trial runs when
#: its message arrives. ``shadow`` renames the task and ``argsrepr`` fakes its arguments
#: in the log and in Flower, so the request writes its own from the real arguments.
UNTRUSTED_HEADERS = ("timelimit", "soft_time_limit", "time_limit", "eta", "countdown",
                     "expires", "shadow", "argsrepr", "kwargsrepr")  # fmt: skip


class TrustedRequest(Request):  # type: ignore[misc]
    """Celery's request of a trial message, minus what the sender should not decide."""

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        headers = kwargs.get("headers")
        headers = dict(message.headers if headers is None else headers)
        for key in UNTRUSTED_HEADERS:
            headers.pop(key, None)
        # Celery logs the task id as given: a newline in it would forge a log line.
        headers["id"] = _printable(str(headers.get("id", "")))
        kwargs["headers"] = headers
        super().__init__(message, *args, **kwargs)
        self.time_limits = (None, None)
        # What Flower and task events show: the arguments the task will really get.
        self._argsrepr = _bounded_repr(self._args)
        self._kwargsrepr = _bounded_repr(self._kwargs)


#: A trial message's arguments fit easily; anything longer came from someone else.
ARGSREPR_MAX = 400


def _bounded_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= ARGSREPR_MAX else f"{text[:ARGSREPR_MAX]}..."


def _printable(text: str) -> str:
    return text if text.isprintable() else repr(text)[1:-1]


@app.task(
    name=TASK_NAME,
    bind=True,
    acks_late=True,
    max_retries=60,
    Request=TrustedRequest,
    # Celery's own limits, whatever a message says: only the backstop of the longest
    # allowed trial. The study's limit is applied in the pool process (_time_limit).
    time_limit=MAX_TRIAL_TIMEOUT_S + HARD_LIMIT_GRACE_S,
    soft_time_limit=None,
)
def run_trial_task(self: Any, payload: Any) -> str:
    """Run the trial named by ``payload``; return what happened, for Celery's logs."""
    try:
        ref = TrialMessage.parse(payload)
    except MessageError as exc:
        # A malformed message cannot succeed on retry: log it and let it be acked.
        log.error("rejected malformed trial message %s: %s", short_repr(payload), exc)
        return Outcome.REJECTED
    config = worker_config()
    warm.wait()  # before the claim: no lease runs out while the warm-up ends
    try:
        store = ResultStore.for_process(config.db_url)
        claimed = store.claim(
            ref.study_id, ref.number, worker_id(), lease_s=config.lease_s, study_name=ref.study
        )
    except MessageError as exc:  # names a study that the DB does not hold under that id
        log.error("rejected trial message %s: %s", short_repr(payload), exc)
        return Outcome.REJECTED
    except ConnectionFailedError as exc:
        # The trial is still queued in the DB: try the message again later.
        log.warning("study %r trial %d: %s; retrying", ref.study, ref.number, exc)
        raise self.retry(countdown=10) from None
    if claimed is None:
        log.info("study %r trial %d is not queued; nothing to do", ref.study, ref.number)
        return Outcome.SKIPPED
    settings = StudySettings.from_dict(claimed.settings)
    return _train_and_record(store, [claimed, *_partners(store, claimed, settings)])


def _train_and_record(store: ResultStore, claims: list[ClaimedTrial]) -> str:
    outcomes = _train(store, claims, StudySettings.from_dict(claims[0].settings))
    return _summary([_record(store, c, o) for c, o in zip(claims, outcomes, strict=True)])


def _partners(
    store: ResultStore, lead: ClaimedTrial, settings: StudySettings
) -> list[ClaimedTrial]:
    """Queued trials of the lead's shape that train in its pack; none with packing off.

    The pack takes at most its share of the study's queued FLOPs (``pack_positions``),
    so a heavy shape is split among the workers that reach it.
    """
    shape = pack_key(lead.params, settings)
    if shape is None:
        return []
    try:
        limit = _pack_size(store, lead, settings) - 1
        data = DataShape.of_splits(_splits(store, lead, settings))
        return store.claim_partners(
            lead,
            worker_id(),
            lease_s=worker_config().lease_s,
            limit=limit,
            fits=lambda params: pack_key(params, settings) == shape,
            pick=lambda queued: pack_positions(lead.params, queued, settings, data, limit),
        )
    except Exception as exc:  # the lead alone can still train, or fail on its own record
        log.warning("study %r: no pack partners this time: %s", lead.study_name, exc)
        return []


def _pack_size(store: ResultStore, lead: ClaimedTrial, settings: StudySettings) -> int:
    """The study's pack size, or with ``--pack-size auto`` this process's measured one for
    the lead's shape (measured on its first pack, under the lead's lease)."""
    if isinstance(settings.pack_size, int):
        return settings.pack_size
    try:
        with Lease(store, [lead], worker_config().lease_s):
            return auto_pack_size(lead.params, _splits(store, lead, settings), settings)
    except ConnectionFailedError:
        raise
    except Exception:  # a failed measurement must not fail the trials: train them as usual
        log.exception("study %r: --pack-size auto could not measure; packs of %d this time",
                      lead.study_name, DEFAULT_PACK_SIZE)  # fmt: skip
        return DEFAULT_PACK_SIZE


def _train(
    store: ResultStore, claims: list[ClaimedTrial], settings: StudySettings
) -> list[TrialResult | TrialError]:
    """Train the claimed trials, one outcome each; any error fails them all."""
    lead = claims[0]
    with (
        _time_limit(settings.trial_timeout_s),
        Lease(store, claims, worker_config().lease_s) as lease,
    ):
        try:
            return train(
                {c.number: c.params for c in claims},
                _splits(store, lead, settings),
                settings,
                study_seed=lead.seed,
                should_stop=lambda: lease.lost,
                stops_at=epoch_judge(store, claims, settings),
            )
        except SoftTimeLimitExceeded:
            what = "the trial" if len(claims) == 1 else f"its pack of {len(claims)} trials"
            fix = "" if len(claims) == 1 else "; raise --trial-timeout or lower --pack-size"
            error = TrialError(
                f"time limit exceeded: {what} ran past {settings.trial_timeout_s:g} s{fix}"
            )
        except TrialError as exc:
            error = exc
        except Exception as exc:  # any bug or backend error fails these trials, not the study
            log.exception("study %r trials %s failed", lead.study_name, [c.number for c in claims])
            error = TrialError(f"{type(exc).__name__}: {exc}")
    return [error] * len(claims)


def _record(
    store: ResultStore, claimed: ClaimedTrial, outcome: TrialResult | TrialError
) -> Outcome:
    label = f"study {claimed.study_name!r} trial {claimed.number} (attempt {claimed.attempt})"
    if isinstance(outcome, TrialResult):
        _witness("trained", claimed)
        if not _persist(lambda: store.finish_trial(claimed, outcome), label):
            log.warning("%s finished, but its claim had lapsed; result dropped", label)
            return Outcome.DROPPED
        _witness("recorded", claimed)
        objective = StudySettings.from_dict(claimed.settings).objective
        log.info(
            "%s %s: %s=%.4f in %.1f s%s",
            label,
            f"pruned after epoch {len(outcome.epochs)}" if outcome.pruned else "succeeded",
            objective,
            outcome.metrics.get(objective, outcome.val_loss),
            outcome.duration_s,
            f" (its share of a pack of {len(outcome.pack)})" if outcome.pack else "",
        )
        return Outcome.PRUNED if outcome.pruned else Outcome.SUCCEEDED
    reason = str(outcome)
    if not _persist(lambda: store.fail_trial(claimed, reason, device=_device_or_none()), label):
        log.warning("%s failed (%s), but its claim had lapsed; not recorded", label, reason)
        return Outcome.DROPPED
    _witness("failed", claimed)
    log.warning("%s failed: %s", label, reason)
    return Outcome.FAILED


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Apply the study's own time limit to a training run in this pool process.

    After ``seconds`` the run gets SoftTimeLimitExceeded (recorded as a failed trial);
    if it has not returned ``HARD_LIMIT_GRACE_S`` later (stuck in native code), the
    process is killed, as Celery's hard limit would, and its lease brings the trial back.
    """
    hard = threading.Timer(seconds + HARD_LIMIT_GRACE_S, os.kill, (os.getpid(), signal.SIGKILL))
    hard.daemon = True
    soft = threading.current_thread() is threading.main_thread()  # signals: main thread only

    def expire(_signum: int, _frame: object) -> None:
        raise SoftTimeLimitExceeded(f"ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire) if soft else None
    if soft:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    hard.start()
    try:
        yield
    finally:
        hard.cancel()
        if soft:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _witness(event: str, claimed: ClaimedTrial) -> None:
    """Append ``event`` to ``$SEQSWEEP_WITNESS_FILE``, if set: the fault tests' record of
    every training run and result write, per attempt, kept apart from the results DB
    (whose rows are updated in place, so a double count would not show there)."""
    path = os.environ.get(WITNESS_ENV)
    if not path:
        return
    line = json.dumps(
        {"event": event, "study_id": claimed.study_id, "number": claimed.number,
         "attempt": claimed.attempt, "pid": os.getpid()}
    )  # fmt: skip
    # One write of a short line with O_APPEND: lines of concurrent processes never mix.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _summary(outcomes: list[Outcome]) -> str:
    """The task's return value, for Celery's logs: the outcome, or counts for a pack."""
    if len(outcomes) == 1:
        return outcomes[0]
    counts = {o: outcomes.count(o) for o in Outcome if o in outcomes}
    return f"pack of {len(outcomes)}: " + ", ".join(f"{n} {o}" for o, n in counts.items())


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
