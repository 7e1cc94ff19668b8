"""What a trial is: its study's split, its seed, and one decision, packed or alone.

The worker's task and ``export`` both call :func:`train`, so a retrained trial is
the one the worker ran: same split, same seed, same pack, same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from seqsweep.dataset import Dataset, Splits, split_dataset
from seqsweep.db.records import EpochRecord, TrialResult
from seqsweep.errors import TrialError
from seqsweep.seeds import trial_seed
from seqsweep.settings import StudySettings
from seqsweep.structure import SGD_MOMENTUM, Structure
from seqsweep.trial.alone import in_target_units, run_trial
from seqsweep.trial.packed import EpochJudge, member_of, pack_shape, run_pack

Outcome = TrialResult | TrialError


def study_splits(data: Dataset, study_seed: int, settings: StudySettings) -> Splits:
    """The train/validation/test split that every trial of a study uses."""
    return split_dataset(data, study_seed, settings.val_fraction, settings.test_fraction)


def pack_key(params: dict[str, Any], settings: StudySettings) -> tuple[Any, ...] | None:
    """What trials must share to train in one pack; None when this trial trains alone.

    Every built-in structure packs; a user's build function (``--model``) never does.
    """
    if settings.pack_size == 1 or settings.model is not None:
        return None
    return pack_shape(params, settings)


def train(
    trials: Mapping[int, dict[str, Any]],
    splits: Splits,
    settings: StudySettings,
    *,
    study_seed: int,
    should_stop: Callable[[], bool] | None = None,
    keep: Callable[[Any], None] | None = None,
    keep_number: int | None = None,
    stops_at: EpochJudge | None = None,
) -> list[Outcome]:
    """Train ``trials`` (number -> params, in pack order) of one study; one outcome each.

    A packed study trains them as one pack (even a lone trial, so that its batches
    and masks do not depend on whether partners were queued); otherwise each trains
    alone with ``fit``. ``keep`` gets trial ``keep_number``'s trained model as a
    standalone Keras model (``export`` saves it). ``stops_at`` is the study's pruner: at
    each epoch's end it gets the trials' metrics and names those that stop there (a
    packed member leaves its pack). Raises TrialError for an error that
    fails every trial: a lost lease, a model that cannot be built.
    """
    numbers = list(trials)
    if keep_number is not None and keep_number not in trials:
        raise ValueError(f"trial {keep_number} is not among {numbers}")
    if pack_key(trials[numbers[0]], settings) is not None:
        return _train_pack(
            trials, splits, settings, study_seed, should_stop, keep, keep_number, stops_at
        )
    outcomes: list[Outcome] = []
    for number, params in trials.items():
        outcomes.append(
            run_trial(
                params,
                splits,
                epochs=settings.epochs,
                batch_size=settings.batch_size,
                seed=trial_seed(study_seed, number),
                should_stop=should_stop,
                keep=keep if number == keep_number else None,
                auc=settings.objective == "val_auc",
                user_model=None
                if settings.model is None
                else (settings.model, settings.model_sha256),
                stops_at=None if stops_at is None else _alone_judge(stops_at, number),
            )
        )
    return outcomes


def _alone_judge(stops_at: EpochJudge, number: int) -> Callable[[EpochRecord], bool]:
    return lambda record: number in stops_at(record.epoch, {number: record})


def _train_pack(
    trials: Mapping[int, dict[str, Any]],
    splits: Splits,
    settings: StudySettings,
    study_seed: int,
    should_stop: Callable[[], bool] | None,
    keep: Callable[[Any], None] | None,
    keep_number: int | None,
    stops_at: EpochJudge | None,
) -> list[Outcome]:
    numbers = list(trials)

    def keep_member(model: Any) -> None:
        import keras

        from models.packed import extract_member

        assert keep is not None and keep_number is not None
        own = Structure.from_params(trials[keep_number])
        member = extract_member(
            model, numbers.index(keep_number), member_of(own), own.optimizer, SGD_MOMENTUM
        )
        keep(in_target_units(keras, member, splits))

    return run_pack(
        [trials[n] for n in numbers],
        numbers,
        splits,
        settings,
        study_seed=study_seed,
        should_stop=should_stop,
        keep=keep_member if keep is not None and keep_number is not None else None,
        auc=settings.objective == "val_auc",
        stops_at=stops_at,
    )
