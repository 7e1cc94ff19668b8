"""``launch``: prepare a study, enqueue its trials, run local workers and wait for the end."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.adaptive import AdaptiveSampler, default_in_flight
from scheduler.data import load_dataset
from scheduler.enqueue import enqueue_trials, send_order
from scheduler.local_workers import LocalWorkers
from scheduler.options import LaunchOptions
from scheduler.progress import Progress
from scheduler.recovery import OrphanWatch, recover_pass
from scheduler.report import StudyReport, study_report
from scheduler.sampling import point_sampler
from scheduler.space import default_space, load_space_file
from seqsweep.broker import celery_config, check_broker, check_broker_url, make_app
from seqsweep.dataset import Dataset, split_sizes
from seqsweep.db import ResultStore, StudyRecord
from seqsweep.errors import ConnectionFailedError, SeqsweepError, UsageError
from seqsweep.pruning import check_prunable
from seqsweep.seeds import fresh_study_seed
from seqsweep.settings import lease_seconds, stop_grace_seconds
from seqsweep.urls import mask_url, sqlite_path
from seqsweep.vocab import Task, TrialStatus

#: How often the wait loop looks for trials whose worker or message was lost.
RECOVER_EVERY_S = 5.0
#: How often launch restarts local workers that exited before the study ended.
LOCAL_WORKER_RESTARTS = 3
#: How long the wait loop rides out an unreachable results DB or broker.
OUTAGE_LIMIT_S = 300.0


@dataclass(frozen=True)
class StartedStudy:
    """A study that is in the results DB with its queued trials on the broker."""

    store: ResultStore
    app: Any
    study: StudyRecord
    added: list[int]
    queued: list[int]
    enqueued: int
    #: Trials the study is to have.
    target: int = 0
    #: Picks trials as others finish (``--sampler tpe|gp|cmaes``); None: all were sampled at launch.
    adaptive: AdaptiveSampler | None = None
    in_flight: int = 0

    def top_up(self) -> bool:
        """Sample and send the next trials of an adaptive study; False once it is cancelled."""
        if self.adaptive is None:
            return True
        if self.adaptive.top_up(self.store, self.study, self.target, self.in_flight) is None:
            return False
        self.store.send_unsent(
            self.study.id, lambda numbers: enqueue_trials(self.app, self.study, numbers)
        )
        return True


def refuse_detach(opts: LaunchOptions) -> None:
    """``--detach`` with a sampler that must keep sampling while the study runs: one line."""
    sampler = opts.settings.sampler
    if sampler.is_adaptive:
        raise UsageError(
            f"--detach: --sampler {sampler} picks each trial from the finished ones, so launch "
            "must keep running; run launch without --detach (e.g. under nohup or tmux), or "
            "use --sampler random or sobol, which enqueue every trial at once"
        )


def start_study(
    opts: LaunchOptions,
    say: Callable[[str], None] = print,
    before_write: Callable[[], None] | None = None,
) -> StartedStudy:
    """Validate every input, create or extend the study, and enqueue its queued trials.

    Nothing is written before all input is valid, and the study, its dataset
    and its trial rows are written in one transaction, so bad input never
    leaves a half-written study behind. ``before_write`` runs once the input is
    valid and both URLs answer, just before the study is written.
    """
    custom = opts.model is not None
    if opts.space_file is None:
        if custom:
            raise UsageError(
                f"--model {opts.model}: pass --space FILE saying what to sample for it"
            )
        space = default_space()
    else:
        space = load_space_file(opts.space_file, custom=custom)
    data = load_dataset(opts.data_file, opts.target, opts.task)
    settings = opts.study_settings(data)
    split_sizes(data.n_rows, settings.val_fraction, settings.test_fraction)
    searched = space.params.get("epochs")  # then each trial trains its own count
    check_prunable(settings, None if searched is None else int(max(searched.bounds())))
    adaptive = None
    if settings.sampler.is_adaptive:
        adaptive = AdaptiveSampler(space, settings.sampler, settings.ranking)
        sampler = None
        trials = opts.trials
    else:
        sampler = point_sampler(space, settings.sampler)
        # A grid has as many trials as combinations, however many more --trials asks for.
        trials = opts.trials if sampler.size is None else min(opts.trials, sampler.size)
    # Settings from the environment are read here, before anything is written: a bad
    # $SEQSWEEP_LEASE_S would otherwise make every worker reject every message.
    lease_seconds()
    stop_grace_seconds()
    celery_config(opts.broker_url)  # $SEQSWEEP_REDIS_VISIBILITY_TIMEOUT_S on Redis
    check_broker_url(opts.broker_url, opts.db_url)

    db_file = sqlite_path(opts.db_url)
    new_db_file = db_file is not None and not db_file.exists()
    store = ResultStore(opts.db_url)
    app = make_app(opts.broker_url, main="scheduler")
    try:
        check_broker(app, opts.broker_url)
    except SeqsweepError:
        if new_db_file and db_file is not None:  # a failed check leaves no empty results DB
            store.dispose()
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        raise

    if before_write is not None:
        before_write()
    study, added = store.create_study(
        opts.study,
        seed=opts.seed,
        fresh_seed=fresh_study_seed(),
        space=space.to_dict(),
        settings=settings.to_dict(),
        data=data,
        # An adaptive study gets its trials one by one, from the finished ones.
        trials=0 if sampler is None else trials,
        sample=_never if sampler is None else sampler.sample,
        max_attempts=opts.max_attempts,
    )
    in_flight = opts.in_flight or default_in_flight(opts.local_workers)
    if adaptive is not None:  # the first window: random picks until trials finish
        added = adaptive.top_up(store, study, trials, in_flight) or []
    queued = store.numbers_in_state(study.id, TrialStatus.QUEUED)
    # Only trials without a message get one: a rerun of a killed launch, or a
    # second launch of the same study, sends nothing twice.
    enqueued = store.send_unsent(
        study.id,
        lambda numbers: enqueue_trials(app, study, numbers),
        order=send_order(settings, data),
    )
    say(
        f"study {study.name}: {trials} trials{_capped(opts.trials, trials)} "
        f"({len(added)} new, {len(queued)} queued, "
        f"{enqueued} sent to the broker), "
        f"{settings.sampler} sampler{f' ({in_flight} in flight)' if adaptive else ''}, "
        f"seed {study.seed}, "
        f"{data.n_rows} rows x {data.n_features} features, "
        f"{_task_text(data, opts.task)}, objective {settings.objective} "
        f"({settings.ranking.direction}); results in {mask_url(opts.db_url)}"
    )
    return StartedStudy(store, app, study, added, queued, enqueued, trials, adaptive, in_flight)


def _never(seed: int, number: int) -> dict[str, Any]:
    raise AssertionError("an adaptive study samples no trial up front")


def _capped(asked: int, trials: int) -> str:
    return "" if asked == trials else f" (every combination of the grid; --trials {asked})"


def _task_text(data: Dataset, requested: str) -> str:
    """How launch names the task: ``2 classes``, or regression and why ``auto`` chose it."""
    if data.task is Task.CLASSIFICATION:
        return f"{data.n_classes} classes"
    if requested == "auto":
        return (
            f"regression (--task auto: a float target with {np.unique(data.y).size} "
            "distinct values)"
        )
    return "regression"


def launch(
    opts: LaunchOptions, say: Callable[[str], None] = print, progress: Progress | None = None
) -> StudyReport:
    """Run study ``opts.study`` to completion and return its report.

    ``progress`` shows the wait (default: plain lines through ``say``).
    """
    early: list[LocalWorkers] = []

    def start_workers() -> None:
        # Before the study is written: the pool processes import Keras and warm up
        # (worker.warm) while launch writes and sends the trials.
        if opts.local_workers > 0:
            early.append(
                LocalWorkers(
                    opts.local_workers, opts.db_url, opts.broker_url, opts.worker_log.resolve()
                )
            )

    try:
        started = start_study(opts, say, before_write=start_workers)
    except BaseException:
        for node in early:
            node.stop()
        raise
    store, study, queued = started.store, started.study, started.queued
    workers = early[0] if early else None
    if workers is not None and not queued:  # the study had nothing left to run
        workers.stop()
        workers = None
    if workers is not None:
        say(f"started {opts.local_workers} local worker process(es); log: {workers.log_path}")
    elif queued:
        say(
            f"waiting for workers on {mask_url(opts.broker_url)}: start them with "
            "python -m worker --broker URL --db URL"
        )
    view = Progress(sys.stdout, say, tty=False) if progress is None else progress
    try:
        _wait(started, workers, opts.poll_interval_s, view)
    finally:
        view.close()
        if workers is not None:
            workers.stop()
    store.complete_study(study.id)
    return study_report(store, study.name, opts.top_k)


def _wait(
    started: StartedStudy,
    workers: LocalWorkers | None,
    poll_s: float,
    view: Progress,
) -> None:
    store, study = started.store, started.study
    last_recovery = float("-inf")
    restarts = 0
    watch = OrphanWatch()
    outage_since: float | None = None
    while True:
        now = time.monotonic()
        try:
            if now - last_recovery >= RECOVER_EVERY_S:
                last_recovery = now
                for line in recover_pass(store, started.app, study, watch).lines():
                    view.note(line)
            if not started.top_up():
                view.note(f"study {study.name} was cancelled; no more trials are sampled")
                return
            counts = store.counts(study.id)
            top = store.top_trials(study.id, 1)
        except ConnectionFailedError as exc:
            # Workers ride out a DB or broker restart; so does the scheduler.
            outage_since = now if outage_since is None else outage_since
            if now - outage_since > OUTAGE_LIMIT_S:
                raise
            view.note(f"{exc}; retrying")
            time.sleep(max(poll_s, 2.0))
            continue
        outage_since = None
        metric = study.objective.metric
        value = top[0].metric(metric) if top else None
        best = None if value is None else (top[0].number, value)
        # An adaptive study's trials are not all sampled yet: show the whole study.
        view.update(
            dataclasses.replace(counts, total=max(counts.total, started.target)), best, metric
        )
        if counts.finished >= counts.total and counts.total >= started.target:
            return
        if workers is not None and (code := workers.exit_code()) is not None:
            # Celery's worker can die on a broker restart (kombu acks on a
            # channel it just closed: celery/kombu#582, #970); start another.
            if restarts >= LOCAL_WORKER_RESTARTS:
                raise SeqsweepError(
                    f"local workers exited with code {code} {restarts + 1} times before the "
                    f"study finished; see {workers.log_path}, then run the same launch to resume"
                )
            restarts += 1
            view.note(
                f"local workers exited with code {code}; restarting them "
                f"({restarts} of {LOCAL_WORKER_RESTARTS}); see {workers.log_path}"
            )
            workers.restart()
        time.sleep(poll_s)
