"""Packed training of several trials of one study as one computation (``models.packed``).

Trials can share a pack when they share its shape: ``dense_units``, epochs and batch
size. Each member still gets its own result or its own failure; one member that
diverges fails alone, because members share no weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from seqsweep.dataset import Splits
from seqsweep.db.records import TrialResult
from seqsweep.errors import TrialError
from seqsweep.seeds import order_seed, trial_seed
from seqsweep.settings import StudySettings
from seqsweep.structure import Structure
from seqsweep.trial.alone import STEPS_PER_EXECUTION, current_device, stop_callbacks, trial_result

_METRICS = ("loss", "accuracy")


def pack_shape(params: dict[str, Any], settings: StudySettings) -> tuple[Any, ...]:
    """What trials of one pack must share: the structure's shape, epochs and batch size."""
    return (
        Structure.from_params(params).shape,
        int(params.get("epochs", settings.epochs)),
        int(params.get("batch_size", settings.batch_size)),
    )


def packable(params: dict[str, Any]) -> bool:
    """Whether ``models.packed`` can train this structure: the article's network."""
    s = Structure.from_params(params)
    return (
        len(s.units) == 2
        and s.units[0] == s.units[1]
        and s.activations == ("relu", "relu")
        and not s.batch_norm
        and not s.l2
        and s.optimizer == "adam"
    )


def run_pack(
    params: Sequence[dict[str, Any]],
    numbers: Sequence[int],
    splits: Splits,
    settings: StudySettings,
    *,
    study_seed: int,
    should_stop: Callable[[], bool] | None = None,
    keep: Callable[[Any], None] | None = None,
) -> list[TrialResult | TrialError]:
    """Train trials ``numbers`` (with ``params``) of one shape together; one outcome each.

    ``keep`` gets the trained pack (``export`` extracts a member from it).
    """
    import keras

    from models.packed import build_packed

    shape, epochs, batch_size = pack_shape(params[0], settings)
    if any(pack_shape(p, settings) != (shape, epochs, batch_size) for p in params):
        raise ValueError("every member of a pack must share its structure, epochs and batch_size")
    structures = [Structure.from_params(p) for p in params]
    dense_units = structures[0].units[0]
    started = time.perf_counter()
    y_train = keras.utils.to_categorical(splits.y_train, splits.n_classes)
    y_val = keras.utils.to_categorical(splits.y_val, splits.n_classes)
    y_test = keras.utils.to_categorical(splits.y_test, splits.n_classes)
    try:
        model = build_packed(
            splits.x_train.shape[1],
            splits.n_classes,
            dense_units=dense_units,
            members=[
                {
                    "dropout_rate1": m.dropouts[0],
                    "dropout_rate2": m.dropouts[1],
                    "learning_rate": m.learning_rate,
                }
                for m in structures
            ],
            seeds=[trial_seed(study_seed, n) for n in numbers],
            steps_per_execution=STEPS_PER_EXECUTION,
        )
        keras.utils.set_random_seed(order_seed(study_seed))
        history = model.fit(
            splits.x_train,
            y_train,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=(splits.x_val, y_val),
            callbacks=stop_callbacks(keras, should_stop),
            verbose=0,
        ).history
        if should_stop is not None and should_stop():
            raise TrialError("training stopped: this worker no longer holds the trials' leases")
        test = model.evaluate(
            splits.x_test, y_test, batch_size=max(batch_size, 256), verbose=0, return_dict=True
        )
        if keep is not None:
            keep(model)
    finally:
        keras.backend.clear_session()
    share = (time.perf_counter() - started) / len(numbers)
    device = current_device()
    pack = tuple(numbers) if len(numbers) > 1 else None
    return [_member_outcome(k, history, test, share, device, pack) for k in range(len(numbers))]


def _member_outcome(
    k: int,
    history: dict[str, list[float]],
    test: dict[str, float],
    duration_s: float,
    device: str,
    pack: tuple[int, ...] | None,
) -> TrialResult | TrialError:
    """Member ``k``'s result, from the pack's ``m{k}_*`` metrics; a divergence is its own."""
    own = {f"{pre}{m}": history[f"{pre}m{k}_{m}"] for pre in ("", "val_") for m in _METRICS}
    scores = {m: test[f"m{k}_{m}"] for m in _METRICS}
    try:
        return trial_result(own, scores, duration_s=duration_s, device=device, pack=pack)
    except TrialError as exc:
        return exc
