"""What ``launch`` takes, with its defaults: one place for the CLI's flags and the Python API.

The CLI's flag names (``--trial-timeout``) and the Python API's keyword arguments
(``trial_timeout=``) are the same names, and :meth:`LaunchOptions.from_flags` maps them
onto the options and the study's :class:`~seqsweep.settings.StudySettings`, so a default
is written once, in these two dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.data import TASKS
from seqsweep.dataset import Dataset
from seqsweep.errors import UsageError
from seqsweep.messages import check_study_name
from seqsweep.seeds import MAX_SEED
from seqsweep.settings import DEFAULT_MAX_ATTEMPTS, StudySettings, check_bounded
from seqsweep.urls import resolve_broker_url, resolve_db_url
from seqsweep.vocab import DEFAULT_OBJECTIVE, OBJECTIVES

#: The study a command means when none is named.
DEFAULT_STUDY = "default"
#: Flags whose option (or setting) has another name; every other flag keeps its name.
_RENAMED = {
    "db": "db_url",
    "broker": "broker_url",
    "space": "space_file",
    "data": "data_file",
    "top": "top_k",
    "trial_timeout": "trial_timeout_s",
}


def _cores() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class LaunchOptions:
    """Everything ``launch`` needs; checks itself on construction."""

    study: str = DEFAULT_STUDY
    trials: int = 100
    #: ``--db`` / ``$SEQSWEEP_DB_URL`` / ``sqlite:///seqsweep.db``, resolved when made.
    db_url: str = field(default_factory=lambda: resolve_db_url(None))
    broker_url: str = field(default_factory=lambda: resolve_broker_url(None))
    seed: int | None = None
    space_file: Path | None = None
    data_file: Path | None = None
    target: str | None = None
    #: ``auto``, ``classification`` or ``regression``; resolved against the data into
    #: the study's settings by ``launch``.
    task: str = "auto"
    #: None: the task's default objective.
    objective: str | None = None
    #: ``module:function`` of a user's build function, or None for the built-in networks.
    model: str | None = None
    settings: StudySettings = field(default_factory=StudySettings)
    #: Worker processes ``launch`` starts here; 0 waits for remote workers.
    local_workers: int = field(default_factory=_cores)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: Trials an adaptive sampler keeps queued or running; None: twice the local
    #: worker processes, at least 4 (``scheduler.adaptive.default_in_flight``).
    in_flight: int | None = None
    #: Rows of the report's top-k table.
    top_k: int = 5
    poll_interval_s: float = 1.0
    worker_log: Path = Path("seqsweep-workers.log")

    def __post_init__(self) -> None:
        check_study_name(self.study)
        for name in ("trials", "local_workers", "max_attempts", "top_k"):
            check_bounded(name, getattr(self, name))
        if self.in_flight is not None:
            check_bounded("in_flight", self.in_flight)
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed <= MAX_SEED
        ):
            raise UsageError(f"--seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}")
        if self.task not in TASKS:
            raise UsageError(f"--task {self.task}: must be one of {', '.join(TASKS)}")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise UsageError(
                f"--objective {self.objective}: must be one of {', '.join(OBJECTIVES)}"
            )

    def study_settings(self, data: Dataset) -> StudySettings:
        """The settings stored with the study: the task the data has, and its objective."""
        task = data.task
        objective = self.objective or DEFAULT_OBJECTIVE[task]
        from seqsweep.trial.user_model import check_reference

        sha256 = None if self.model is None else check_reference(self.model)
        settings = dataclasses.replace(
            self.settings, task=task, objective=objective, model=self.model, model_sha256=sha256
        )
        if objective == "val_auc" and data.n_classes != 2:
            raise UsageError(
                f"--objective val_auc needs two classes, the data has {data.n_classes}; "
                "use val_accuracy or val_loss"
            )
        return settings

    @classmethod
    def from_flags(cls, **flags: Any) -> LaunchOptions:
        """Options from the launch flags by name (``trial_timeout=60``, ``db="sqlite:///r.db"``).

        A flag left out (or ``None``) keeps its default; an unknown name is refused.
        """
        names = _fields_by_flag()
        options: dict[str, Any] = {}
        settings: dict[str, Any] = {}
        for flag, value in flags.items():
            if flag not in names:
                raise UsageError(
                    f"unknown launch option {flag!r}; the options are {', '.join(sorted(names))}"
                )
            name, is_setting = names[flag]
            if value is not None:
                (settings if is_setting else options)[name] = value
        options["db_url"] = resolve_db_url(options.get("db_url"))
        options["broker_url"] = resolve_broker_url(options.get("broker_url"))
        for name in ("space_file", "data_file", "worker_log"):
            if name in options:
                options[name] = Path(options[name])
        return cls(settings=StudySettings(**settings), **options)


def flag_names() -> frozenset[str]:
    """Every name :meth:`LaunchOptions.from_flags` takes."""
    return frozenset(_fields_by_flag())


def _fields_by_flag() -> dict[str, tuple[str, bool]]:
    """Flag name -> (field name, whether it is a study setting)."""
    flag_of = {field: flag for flag, field in _RENAMED.items()}
    names = {
        flag_of.get(f.name, f.name): (f.name, False)
        for f in dataclasses.fields(LaunchOptions)
        if f.name != "settings"
    }
    names.update(
        {
            flag_of.get(f.name, f.name): (f.name, True)
            for f in dataclasses.fields(StudySettings)
            # task, objective and model: resolved by launch; model_sha256 is computed.
            if f.name not in names and f.name != "model_sha256"
        }
    )
    return names
