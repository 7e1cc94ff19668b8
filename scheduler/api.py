"""The Python API, for notebooks and scripts: ``seqsweep.launch`` and ``seqsweep.load_study``.

``import seqsweep`` re-exports these names, and every process that imports anything of
``seqsweep`` (a worker reading its settings) imports this module with it. So it imports
nothing at module level: the launch machinery, pandas, plotly and Keras load on first
use, and a worker never pays for them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from scheduler.export import ExportReport
    from scheduler.report import StudyReport
    from seqsweep.db import ResultStore, StudyRecord, TrialRecord


def launch(*, detach: bool = False, progress: bool = True, **options: Any) -> StudyReport:
    """Run a study to completion, as ``seqsweep launch`` does, and return its report.

    The keyword arguments are the command's flags, with the same defaults
    (``scheduler.options.LaunchOptions`` and ``seqsweep.settings.StudySettings``): ``study``,
    ``trials``, ``seed``, ``space`` and ``data`` (paths), ``target``, ``epochs``,
    ``batch_size``, ``val_fraction``, ``test_fraction``, ``trial_timeout``, ``pack_size``,
    ``local_workers``, ``max_attempts``, ``sampler``, ``in_flight``, ``pruner``,
    ``reduction_factor``, ``min_epochs``, ``db``, ``broker`` and ``top``. ``detach=True``
    enqueues the trials and returns the report as it stands, for workers started elsewhere
    (refused for the adaptive samplers ``tpe``, ``gp`` and ``cmaes``, which must keep
    sampling).
    ``progress`` shows a bar (a widget in Jupyter) and what launch does;
    ``progress=False`` runs silently. Bad input raises a ``seqsweep.errors.UsageError``
    whose message says what to fix.
    """
    from scheduler.launch import launch as run
    from scheduler.launch import refuse_detach, start_study
    from scheduler.options import LaunchOptions
    from scheduler.progress import Progress
    from scheduler.report import study_report

    opts = LaunchOptions.from_flags(**options)

    def say(line: str) -> None:
        if progress:
            print(line, flush=True)

    if detach:
        refuse_detach(opts)
        started = start_study(opts, say=say)
        return study_report(started.store, started.study.name, opts.top_k)
    view = Progress(sys.stderr, say, tty=None if progress else False)
    return run(opts, say=say, progress=view)


def load_study(name: str | None = None, db: str | None = None) -> Study:
    """Open study ``name`` (default: ``default``) in the results DB ``db``.

    ``db`` defaults to ``$SEQSWEEP_DB_URL``, else ``./seqsweep.db``; a SQLite file that
    does not exist, or a study that is not in it, raises a ``UsageError``.
    """
    from scheduler.options import DEFAULT_STUDY
    from seqsweep.db import ResultStore
    from seqsweep.urls import resolve_db_url

    store = ResultStore(resolve_db_url(db), create=False)
    return Study(store, store.require_study(DEFAULT_STUDY if name is None else name).name)


class Study:
    """A study in a results DB. It reads the DB on every access, so it follows a study
    that is still running."""

    def __init__(self, store: ResultStore, name: str) -> None:
        self._store = store
        self.name = name

    def __repr__(self) -> str:
        record = self.record
        return f"<Study {self.name!r} ({record.status}) in {self._store.masked_url}>"

    @property
    def record(self) -> StudyRecord:
        """The study's own row: status, seed, search space and settings."""
        return self._store.require_study(self.name)

    @property
    def trials(self) -> tuple[TrialRecord, ...]:
        """Every trial, by number, in whatever state it is."""
        return tuple(self._store.get_trials(self.record.id))

    @property
    def best(self) -> TrialRecord | None:
        """The best succeeded trial (highest val_accuracy, ties to lower val_loss)."""
        top = self._store.top_trials(self.record.id, 1)
        return top[0] if top else None

    def trials_dataframe(self) -> pd.DataFrame:
        """One row per trial and one column per parameter and metric, as Optuna's has.

        Columns: ``number``, ``value`` (the objective), the final metrics, ``datetime_start``,
        ``datetime_complete``, ``duration`` (between the two), ``duration_s`` (the trial's
        own training time: a packed trial's share of its pack), ``params_<name>`` for each
        parameter, ``state`` (seqsweep's status), ``attempts``, ``worker``, ``device`` and
        ``error``.
        """
        from scheduler.frames import trials_dataframe

        return trials_dataframe(self.record, self.trials)

    def report(self, top: int | None = None) -> StudyReport:
        """The report ``seqsweep report`` prints: best trial, top ``top``, importance."""
        from scheduler.report import REPORT_TOP, study_report

        return study_report(self._store, self.name, REPORT_TOP if top is None else top)

    def html(self, path: str | Path, top: int | None = None) -> Path:
        """Write the study's HTML report (``seqsweep report --html``) to ``path``."""
        from scheduler.html_report import write_html_report

        return write_html_report(self._store, self.report(top), Path(path))

    def export(self, path: str | Path, trial: int | None = None) -> ExportReport:
        """Retrain the best trial (or ``trial``) and save it as a ``.keras`` file at ``path``.

        Trains in this process, as ``seqsweep export`` does: it imports Keras here.
        """
        from scheduler.export import export_best

        return export_best(self._store, self.name, Path(path), trial)
