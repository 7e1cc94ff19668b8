"""Adaptive sampling (``--sampler tpe|gp|cmaes``): each trial is picked from the finished ones.

Optuna's samplers do the picking, through ask/tell; seqsweep only keeps them fed. The
results DB stays the truth: before every pick, an in-memory Optuna study is rebuilt
from the study's trials (finished ones with their objective, pruned ones as pruned at
their last epoch, failed ones as failed, queued and running ones as running, which
TPE's constant liar and GP's batch acquisition count as pending), so a relaunch after
the scheduler was killed sees every finished trial again. CMA-ES, which keeps its
learned distribution in trial attributes the DB does not hold, has its finished trials
replayed generation by generation (``scheduler.cmaes_replay``). The sampler that picks
trial *n* is seeded by (study seed, *n*): the same trials in the DB give the same
parameters.

Conditional parameters are asked define-by-run: the parameters that decide which
others a trial uses come first, and a trial is never asked for one it would not use.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import warnings
from collections.abc import Iterator
from typing import Any

from scheduler.cmaes_replay import cma_dims, popsize, replay
from scheduler.optuna_export import optuna_distribution
from scheduler.space import Choice, Distribution, Fixed, IntRange, SearchSpace
from seqsweep.db import ResultStore, StudyRecord, TrialRecord
from seqsweep.errors import UsageError
from seqsweep.seeds import adaptive_seed
from seqsweep.structure import CONDITIONS, active_params
from seqsweep.vocab import Direction, Objective, Sampler, StudyStatus, TrialStatus

#: The fewest trials an adaptive launch keeps queued or running (``--in-flight``).
MIN_IN_FLIGHT = 4

#: What each adaptive sampler needs beyond Optuna: (module, its name, the seqsweep extra).
_NEEDS: dict[Sampler, tuple[str, str, str]] = {
    Sampler.TPE: ("optuna", "Optuna", "optuna"),
    Sampler.GP: ("torch", "PyTorch (Optuna's GPSampler fits its model with it)", "gp"),
    Sampler.CMAES: ("cmaes", "the cmaes package (Optuna's CmaEsSampler runs on it)", "cmaes"),
}


def default_in_flight(worker_processes: int) -> int:
    """Twice the worker processes launch can see, so none waits for a pick; at least 4."""
    return max(MIN_IN_FLIGHT, 2 * worker_processes)


class AdaptiveSampler:
    """Picks the next trials of one study from its trials in the results DB."""

    def __init__(self, space: SearchSpace, name: Sampler, objective: Objective) -> None:
        self.space = space
        self.name = Sampler(name)
        self.objective = objective
        module, what, extra = _NEEDS[self.name]
        for name, label in (("optuna", "Optuna"), (module, what)):
            if not _installed(name):
                raise UsageError(
                    f'--sampler {self.name} needs {label}: pip install "seqsweep[{extra}]"'
                )
        #: What each searched parameter is in Optuna, as export-optuna writes it.
        self._dists = {
            n: optuna_distribution(d) for n, d in space.params.items() if not isinstance(d, Fixed)
        }

    def top_up(
        self, store: ResultStore, study: StudyRecord, target: int, in_flight: int
    ) -> list[int] | None:
        """Add trials until ``in_flight`` are queued or running, or the study has ``target``.

        Returns the numbers added, or None once the study is cancelled: nothing more is
        sampled for it.
        """
        current = store.get_study(study.name)
        if current is None or current.status == StudyStatus.CANCELLED:
            return None
        history = store.get_trials(study.id)
        pending = sum(not t.status.is_finished for t in history)
        wanted = min(in_flight - pending, target - len(history))
        number = max((t.number for t in history), default=-1) + 1
        picks: dict[int, dict[str, Any]] = {}
        pruned = [t for t in history if t.status == TrialStatus.PRUNED]
        if wanted > 0 and pruned:
            epochs = store.epochs_of([t.id for t in pruned])
            pruned_at = {t.number: len(epochs.get(t.id, [])) for t in pruned}
        else:
            pruned_at = {}
        for _ in range(max(wanted, 0)):
            params = self.pick(study.seed, number, history, list(picks.values()), pruned_at)
            picks[number] = params
            number += 1
        return store.add_trials(study.id, picks) if picks else []

    def pick(
        self,
        seed: int,
        number: int,
        history: list[TrialRecord],
        picked: list[dict[str, Any]] | None = None,
        pruned_at: dict[int, int] | None = None,
    ) -> dict[str, Any]:
        """Parameters of trial ``number``, from ``history`` and trials ``picked`` just now.

        ``pruned_at`` holds the last epoch of each pruned trial (by number).
        """
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction = "maximize" if self.objective.direction is Direction.MAXIMIZE else "minimize"
        frozen = [
            f
            for f in (self._frozen(r, (pruned_at or {}).get(r.number)) for r in history)
            if f is not None
        ]
        done = [f for f in frozen if f.state == optuna.trial.TrialState.COMPLETE]
        dims = cma_dims(done) if self.name is Sampler.CMAES and done else {}
        study = optuna.create_study(
            direction=direction, sampler=self._sampler(seed, number, len(dims))
        )
        if dims:
            replay(study, done, dims, popsize(len(dims)))
            frozen = [f for f in frozen if f.state != optuna.trial.TrialState.COMPLETE]
        for f in frozen:
            study.add_trial(f)
        for params in picked or []:
            study.add_trial(self._running(params))
        trial = study.ask()
        with _one_thread(self.name is Sampler.GP):
            return self._ask_all(trial)

    def _ask_all(self, trial: Any) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        deciding = [n for n in CONDITIONS if n in self.space.params]
        for name in deciding:
            chosen[name] = self._suggest(trial, name)
        probe = {name: chosen.get(name) for name in self.space.params}
        for name in active_params(probe):
            if name not in chosen:
                chosen[name] = self._suggest(trial, name)
        return {n: chosen[n] for n in self.space.params if n in chosen}

    def _sampler(self, seed: int, number: int, dims: int) -> Any:
        import optuna

        seed = adaptive_seed(seed, number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.name is Sampler.GP:
                # GPSampler takes running trials into its batch acquisition on its own
                # (qLogEI); parameters outside the shared space are drawn at random.
                return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
            if self.name is Sampler.CMAES:
                # CMA-ES has no constant liar: a generation is the next popsize trials
                # to finish, wherever they were sampled. Choices and conditional
                # parameters are drawn at random, as CMA-ES models only shared ranges.
                return optuna.samplers.CmaEsSampler(
                    seed=seed,
                    popsize=popsize(dims) if dims else None,
                    warn_independent_sampling=False,
                )
            # multivariate + group: TPE models parameters jointly, within each set
            # of parameters that trials share (a depth's layers), as conditional spaces need.
            return optuna.samplers.TPESampler(
                seed=seed,
                constant_liar=True,
                multivariate=True,
                group=True,
            )

    def _suggest(self, trial: Any, name: str) -> Any:
        dist = self.space.params[name]
        if isinstance(dist, Fixed):
            return dist.value
        if isinstance(dist, Choice):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna warns about choices of mixed types
                return trial.suggest_categorical(name, list(dist.values))
        found = self._dists[name]
        if isinstance(dist, IntRange):
            return trial.suggest_int(name, found.low, found.high, step=found.step, log=found.log)
        return trial.suggest_float(name, found.low, found.high, log=found.log)

    def _known(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The searched params of a stored trial that fit the space, and their distributions."""
        values: dict[str, Any] = {}
        dists: dict[str, Any] = {}
        for name, value in params.items():
            dist = self.space.params.get(name)
            if name in self._dists and dist is not None and _fits(dist, value):
                values[name], dists[name] = value, self._dists[name]
        return values, dists

    def _frozen(self, record: TrialRecord, pruned_at: int | None = None) -> Any:
        import optuna
        from optuna.trial import TrialState

        if record.status == TrialStatus.CANCELLED:
            return None
        values, dists = self._known(record.params)
        if not record.status.is_finished:
            return optuna.trial.create_trial(
                params=values, distributions=dists, state=TrialState.RUNNING
            )
        value = record.metric(self.objective.metric)
        if record.status == TrialStatus.PRUNED and value is not None and math.isfinite(value):
            # As Optuna records its own pruned trials: TPE ranks them below complete
            # ones by the epoch they reached, then by their value there.
            return optuna.trial.create_trial(
                params=values,
                distributions=dists,
                state=TrialState.PRUNED,
                intermediate_values={pruned_at or 1: value},
            )
        if record.status != TrialStatus.SUCCEEDED or value is None or not math.isfinite(value):
            return optuna.trial.create_trial(
                params=values, distributions=dists, state=TrialState.FAIL
            )
        return optuna.trial.create_trial(params=values, distributions=dists, value=value)

    def _running(self, params: dict[str, Any]) -> Any:
        import optuna
        from optuna.trial import TrialState

        values, dists = self._known(params)
        return optuna.trial.create_trial(
            params=values, distributions=dists, state=TrialState.RUNNING
        )


@contextlib.contextmanager
def _one_thread(torch_used: bool) -> Iterator[None]:
    """GPSampler's fit on one torch thread: the cores belong to the workers training next
    to the scheduler, and torch's threads fighting them for the cores slowed every pick."""
    if not torch_used:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # sys.modules holds None for it: importing it fails
        return False


def _fits(dist: Distribution, value: Any) -> bool:
    if isinstance(dist, Choice):
        return value in dist.values
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return bool(dist.low <= value <= dist.high)  # type: ignore[union-attr]
