"""``export-optuna``: a study's trials in an Optuna RDB storage, for optuna-dashboard.

Optuna is an optional extra (``pip install "seqsweep[optuna]"``); nothing else imports it.
What a seqsweep trial becomes in Optuna is written once, here: its distributions
(:func:`optuna_distribution`), its state (``_STATES``), its objective value
(:data:`seqsweep.vocab.OBJECTIVE`), its per-epoch values (intermediate values) and the
rest of its record (user attributes). Each Optuna trial carries its seqsweep number
(``seqsweep_number``), so a second export updates the first instead of adding to it.

Optuna never changes a finished trial, and neither does seqsweep; an unfinished one
(waiting or running) is brought up to date on the next pass. Optuna stamps the start
and end of such a trial itself, when the pass sees it change, so their exact times are
also kept as the user attributes ``started_at`` and ``finished_at``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.space import Choice, Distribution, Fixed, IntRange, LogUniform, SearchSpace
from seqsweep.db import EpochRecord, ResultStore, TrialRecord
from seqsweep.db.engine import parse_db_url
from seqsweep.errors import UsageError
from seqsweep.files import create_private
from seqsweep.urls import mask_url, sqlite_path
from seqsweep.vocab import OBJECTIVE, Direction, Objective, TrialStatus

#: The user attribute that names an Optuna trial's seqsweep trial.
NUMBER_ATTR = "seqsweep_number"
#: Seconds between two passes of ``--watch``, and its bounds.
DEFAULT_INTERVAL_S = 5.0
MIN_INTERVAL_S = 0.5
MAX_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class OptunaExport:
    """What one pass wrote to the Optuna storage."""

    study: str
    storage: str  # masked
    status: str  # the seqsweep study's, when the pass began
    trials: int
    created: int
    updated: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def optuna_distribution(dist: Distribution) -> Any:
    """The Optuna distribution of a seqsweep one: choice and fixed values are categorical."""
    from optuna import distributions as od

    if isinstance(dist, Choice):
        return od.CategoricalDistribution(dist.values)
    if isinstance(dist, Fixed):
        return od.CategoricalDistribution((dist.value,))
    if isinstance(dist, IntRange):
        # Optuna wants high on the step grid; seqsweep never samples past the last step.
        high = dist.low + (dist.high - dist.low) // dist.step * dist.step
        return od.IntDistribution(dist.low, high, log=dist.log, step=dist.step)
    return od.FloatDistribution(dist.low, dist.high, log=isinstance(dist, LogUniform))


def _states() -> dict[TrialStatus, Any]:
    from optuna.trial import TrialState

    return {
        TrialStatus.QUEUED: TrialState.WAITING,
        TrialStatus.RUNNING: TrialState.RUNNING,
        TrialStatus.SUCCEEDED: TrialState.COMPLETE,
        # With its epochs as intermediate values, as Optuna records its own pruned trials.
        TrialStatus.PRUNED: TrialState.PRUNED,
        TrialStatus.FAILED: TrialState.FAIL,
        # Optuna has no cancelled state; a cancelled trial never ran and never will.
        TrialStatus.CANCELLED: TrialState.FAIL,
    }


def user_attrs(trial: TrialRecord) -> dict[str, Any]:
    """Everything seqsweep knows of a trial beyond params and objective, JSON-ready."""
    attrs: dict[str, Any] = {
        NUMBER_ATTR: trial.number,
        "status": str(trial.status),
        "attempts": trial.attempts,
        "worker": trial.worker,
        "device": trial.device,
        "val_accuracy": trial.val_accuracy,
        "val_loss": trial.val_loss,
        "test_accuracy": trial.test_accuracy,
        "test_loss": trial.test_loss,
        "duration_s": trial.duration_s,
        "started_at": _iso(trial.started_at),
        "finished_at": _iso(trial.finished_at),
        "pack": None if trial.pack is None else list(trial.pack),
        "error": trial.error,
    }
    return {k: v for k, v in attrs.items() if v is not None}


class OptunaSync:
    """Keeps one Optuna study in step with one seqsweep study; :meth:`run` makes one pass."""

    def __init__(self, store: ResultStore, study_name: str, storage_url: str) -> None:
        try:
            import optuna
        except ImportError:
            raise UsageError('export-optuna needs Optuna: pip install "seqsweep[optuna]"') from None
        url = parse_db_url(storage_url, flag="--storage")
        if url == parse_db_url(store.url):
            raise UsageError(
                f"--storage {mask_url(storage_url)!r} is the results DB itself; Optuna's "
                "tables would collide with seqsweep's: give it its own, e.g. "
                "--storage sqlite:///optuna.db"
            )
        self._optuna = optuna
        self._store = store
        self._record = store.require_study(study_name)
        self.masked_storage = mask_url(storage_url)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if (path := sqlite_path(storage_url)) is not None:
            create_private(path)  # every trial's parameters and metrics, as in the results DB
        self._storage = optuna.storages.RDBStorage(url.render_as_string(hide_password=False))
        self._goal = self._record.objective
        custom = self._record.settings.get("model") is not None
        self._space = SearchSpace.from_dict(self._record.space, custom=custom)
        self._distributions = {
            name: optuna_distribution(dist) for name, dist in self._space.params.items()
        }
        self._study_id = self._optuna_study()
        #: seqsweep number -> (Optuna trial id, its state and user attributes as written)
        self._known = {
            int(t.user_attrs[NUMBER_ATTR]): (t._trial_id, t.state, dict(t.user_attrs))
            for t in self._storage.get_all_trials(self._study_id, deepcopy=False)
            if NUMBER_ATTR in t.user_attrs
        }

    def _optuna_study(self) -> int:
        from optuna.exceptions import DuplicatedStudyError
        from optuna.study import StudyDirection

        direction = (
            StudyDirection.MAXIMIZE
            if self._goal.direction is Direction.MAXIMIZE
            else StudyDirection.MINIMIZE
        )
        name = self._record.name
        try:
            study_id = int(self._storage.create_new_study([direction], study_name=name))
        except DuplicatedStudyError:
            study_id = int(self._storage.get_study_id_from_name(name))
            if self._storage.get_study_directions(study_id) != [direction]:
                raise UsageError(
                    f"--storage {self.masked_storage}: its study {name!r} has other directions "
                    f"than seqsweep's ({self._goal.direction} {self._goal.metric}); export to "
                    "another storage"
                ) from None
        attrs = {
            "seqsweep_study": name,
            "objective": self._goal.metric,
            "seed": self._record.seed,
            "space": self._record.space,
            "settings": self._record.settings,
        }
        stored = self._storage.get_study_user_attrs(study_id)
        for key, value in attrs.items():
            if stored.get(key) != value:
                self._storage.set_study_user_attr(study_id, key, value)
        study = self._optuna.load_study(study_name=name, storage=self._storage)
        if study.metric_names != [self._goal.metric]:
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and still there
                warnings.simplefilter("ignore", self._optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([self._goal.metric])  # the dashboard's axis title
        return study_id

    def run(self) -> OptunaExport:
        """Create the trials Optuna lacks and bring its unfinished ones up to date."""
        status = self._store.require_study(self._record.name).status
        trials = self._store.get_trials(self._record.id)
        states = _states()
        stale = [
            t
            for t in trials
            if t.number not in self._known
            or (not self._known[t.number][1].is_finished() and self._changed(t, states))
        ]
        epochs = self._store.epochs_of(t.id for t in stale if t.status.is_finished)
        created = updated = 0
        for trial in stale:
            if trial.number in self._known:
                self._update(trial, epochs.get(trial.id, []), states)
                updated += 1
            else:
                self._create(trial, epochs.get(trial.id, []), states)
                created += 1
        return OptunaExport(
            study=self._record.name,
            storage=self.masked_storage,
            status=str(status),
            trials=len(trials),
            created=created,
            updated=updated,
        )

    def _changed(self, trial: TrialRecord, states: dict[TrialStatus, Any]) -> bool:
        _, state, attrs = self._known[trial.number]
        return bool(state != states[trial.status] or attrs != user_attrs(trial))

    def _create(
        self, trial: TrialRecord, epochs: list[EpochRecord], states: dict[TrialStatus, Any]
    ) -> None:
        from optuna.trial import FrozenTrial, TrialState

        state = states[trial.status]
        value = _objective(trial, self._goal) if state == TrialState.COMPLETE else None
        if state == TrialState.COMPLETE and value is None:
            state = TrialState.FAIL  # a success with no usable value is no result to rank
        start = trial.started_at or trial.finished_at
        params = {n: v for n, v in trial.params.items() if n in self._distributions}
        frozen = FrozenTrial(
            number=0,  # Optuna numbers trials itself, in the order they are created
            state=state,
            value=value,
            datetime_start=None if state == TrialState.WAITING else _local(start),
            datetime_complete=_local(trial.finished_at) if state.is_finished() else None,
            params=params,
            distributions={n: self._distributions[n] for n in params},
            user_attrs=user_attrs(trial),
            system_attrs={},
            intermediate_values=_intermediate(epochs, self._goal),
            trial_id=0,
        )
        trial_id = self._storage.create_new_trial(self._study_id, template_trial=frozen)
        self._known[trial.number] = (trial_id, state, frozen.user_attrs)

    def _update(
        self, trial: TrialRecord, epochs: list[EpochRecord], states: dict[TrialStatus, Any]
    ) -> None:
        from optuna.trial import TrialState

        trial_id, state, written = self._known[trial.number]
        attrs = user_attrs(trial)
        for key, value in attrs.items():
            if written.get(key) != value:
                self._storage.set_trial_user_attr(trial_id, key, value)
        target = states[trial.status]
        value = _objective(trial, self._goal) if target == TrialState.COMPLETE else None
        if target == TrialState.COMPLETE and value is None:
            target = TrialState.FAIL
        if target.is_finished() and state == TrialState.WAITING:
            # Optuna stamps the start when a trial starts running; it must have one.
            self._storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        for step, val in _intermediate(epochs, self._goal).items():
            self._storage.set_trial_intermediate_value(trial_id, step, val)
        if target != state:
            self._storage.set_trial_state_values(
                trial_id, target, None if value is None else [value]
            )
        self._known[trial.number] = (trial_id, target, attrs)


def export_optuna(
    store: ResultStore,
    study_name: str,
    storage_url: str,
    *,
    watch: bool = False,
    interval_s: float = DEFAULT_INTERVAL_S,
    say: Callable[[OptunaExport], None] = print,
) -> OptunaExport:
    """Write ``study_name`` into the Optuna storage at ``storage_url``; return the last pass.

    With ``watch``, pass again every ``interval_s`` seconds until the study is no longer
    running (a Ctrl-C stops it sooner); ``say`` hears of every pass that changed something.
    """
    if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
        raise UsageError(
            f"--interval must be in [{MIN_INTERVAL_S:g}, {MAX_INTERVAL_S:g}] seconds, "
            f"got {interval_s:g}; use e.g. --interval 5"
        )
    sync = OptunaSync(store, study_name, storage_url)
    while True:
        done = sync.run()
        if done.created or done.updated or not watch or done.status != "running":
            say(done)
        if not watch or done.status != "running":
            return done
        time.sleep(interval_s)


def format_optuna_export(done: OptunaExport) -> str:
    return (
        f"study {done.study} ({done.status}): {done.trials} trials in {done.storage} "
        f"({done.created} added, {done.updated} updated); view them with "
        f"optuna-dashboard {done.storage}"
    )


def _objective(trial: TrialRecord, goal: Objective = OBJECTIVE) -> float | None:
    value = trial.metric(goal.metric)
    return float(value) if value is not None and math.isfinite(value) else None


def _intermediate(epochs: list[EpochRecord], goal: Objective = OBJECTIVE) -> dict[int, float]:
    """The objective's per-epoch values, by epoch (Optuna's step): val_loss and
    val_accuracy are recorded per epoch, the other objectives only at the end."""
    values = {e.epoch: getattr(e, goal.metric, None) for e in epochs}
    return {step: float(v) for step, v in values.items() if v is not None and math.isfinite(v)}


def _local(stamp: datetime | None) -> datetime | None:
    """Optuna stores naive local times (it stamps with ``datetime.now()``)."""
    return None if stamp is None else stamp.astimezone().replace(tzinfo=None)


def _iso(stamp: datetime | None) -> str | None:
    return None if stamp is None else stamp.isoformat()
