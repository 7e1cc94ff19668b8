"""Packed training of several trials of one study as one computation (``models.packed``).

Trials can share a pack when they share its shape: the structure's (the units and
activation of every layer, batch norm, the optimizer kind), epochs and batch size;
they may differ in rates (dropout, learning rate, weight decay, l2). Each member still
gets its own result or its own failure; one member that diverges fails alone, because
members share no weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from seqsweep.dataset import Splits
from seqsweep.db.records import TrialResult
from seqsweep.errors import TrialError
from seqsweep.seeds import order_seed, pack_dropout_seed, trial_seed
from seqsweep.settings import StudySettings
from seqsweep.structure import SGD_MOMENTUM, Structure
from seqsweep.trial.alone import (
    STEPS_PER_EXECUTION,
    binary_auc,
    current_device,
    stop_callbacks,
    targets,
    trial_result,
)
from seqsweep.vocab import Task

#: What the pack reports per member, by task (``models.packed.PackedMetrics``).
_METRICS = {
    Task.CLASSIFICATION: ("loss", "accuracy"),
    Task.REGRESSION: ("loss", "mean_squared_error", "mean_absolute_error"),
}


def pack_shape(params: dict[str, Any], settings: StudySettings) -> tuple[Any, ...]:
    """What trials of one pack must share: the structure's shape, epochs and batch size."""
    return (
        Structure.from_params(params).shape,
        int(params.get("epochs", settings.epochs)),
        int(params.get("batch_size", settings.batch_size)),
    )


def member_of(structure: Structure) -> Any:
    """What a trial holds of its own in a pack: its rates (``models.packed.Member``)."""
    from models.packed import Member

    return Member(
        dropouts=structure.dropouts,
        learning_rate=structure.learning_rate,
        l2=structure.l2,
        weight_decay=structure.weight_decay,
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
    auc: bool = False,
) -> list[TrialResult | TrialError]:
    """Train trials ``numbers`` (with ``params``) of one shape together; one outcome each.

    ``keep`` gets the trained pack (``export`` extracts a member from it); ``auc`` adds
    each member's val and test AUC.
    """
    import keras

    from models.packed import build_packed

    shape, epochs, batch_size = pack_shape(params[0], settings)
    if any(pack_shape(p, settings) != (shape, epochs, batch_size) for p in params):
        raise ValueError("every member of a pack must share its structure, epochs and batch_size")
    structures = [Structure.from_params(p) for p in params]
    first = structures[0]
    seeds = [trial_seed(study_seed, n) for n in numbers]
    started = time.perf_counter()
    y_train, y_val, y_test = targets(keras, splits)
    try:
        model = build_packed(
            splits.x_train.shape[1],
            splits.n_outputs,
            units=first.units,
            activations=first.activations,
            batch_norm=first.batch_norm,
            optimizer=first.optimizer,
            momentum=SGD_MOMENTUM,
            members=[member_of(m) for m in structures],
            seeds=seeds,
            dropout_seeds=[pack_dropout_seed(seeds, i + 1) for i in range(len(first.units))],
            task=str(splits.task),
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
        extras = _aucs(model, splits, len(numbers)) if auc else [{} for _ in numbers]
        if keep is not None:
            keep(model)
    finally:
        keras.backend.clear_session()
    share = (time.perf_counter() - started) / len(numbers)
    device = current_device()
    pack = tuple(numbers) if len(numbers) > 1 else None
    return [
        _member_outcome(k, history, test, share, device, pack, splits, extras[k])
        for k in range(len(numbers))
    ]


def _aucs(model: Any, splits: Splits, members: int) -> list[dict[str, float]]:
    """Each member's val and test AUC (binary classification), from the pack's outputs."""
    from keras import ops

    out: list[dict[str, float]] = [{} for _ in range(members)]
    for split, x, y in (
        ("val", splits.x_val, splits.y_val),
        ("test", splits.x_test, splits.y_test),
    ):
        scores = ops.convert_to_numpy(ops.softmax(model(x, training=False), axis=-1))
        for k in range(members):
            out[k][f"{split}_auc"] = binary_auc(y, scores[k, :, 1])
    return out


def _member_outcome(
    k: int,
    history: dict[str, list[float]],
    test: dict[str, float],
    duration_s: float,
    device: str,
    pack: tuple[int, ...] | None,
    splits: Splits,
    extra: dict[str, float],
) -> TrialResult | TrialError:
    """Member ``k``'s result, from the pack's ``m{k}_*`` metrics; a divergence is its own."""
    names = _METRICS[splits.task]
    own = {f"{pre}{m}": history[f"{pre}m{k}_{m}"] for pre in ("", "val_") for m in names}
    scores = {m: test[f"m{k}_{m}"] for m in names}
    try:
        return trial_result(
            own, scores, duration_s=duration_s, device=device, pack=pack, splits=splits,
            extra=extra,
        )  # fmt: skip
    except TrialError as exc:
        return exc
