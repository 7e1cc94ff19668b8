"""One trial trained alone: build its model, ``fit``, evaluate. Backend-neutral Keras 3.

Keras is imported lazily, so that importing this (as the Celery parent process
does before forking) never initialises TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from seqsweep.dataset import Splits
from seqsweep.db.records import EpochRecord, TrialResult
from seqsweep.errors import TrialError
from seqsweep.structure import Structure
from seqsweep.trial.traces import release_traces
from seqsweep.trial.user_model import build_user_model
from seqsweep.vocab import Task

#: Train steps per compiled call. Keras' per-step overhead, not arithmetic, bounds a
#: network this small; 32 steps per call halves a trial's time (see the README).
STEPS_PER_EXECUTION = 32


def run_trial(
    params: dict[str, Any],
    splits: Splits,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    should_stop: Callable[[], bool] | None = None,
    keep: Callable[[Any], None] | None = None,
    auc: bool = False,
    user_model: tuple[str, str | None] | None = None,
    stops_at: Callable[[EpochRecord], bool] | None = None,
) -> TrialResult:
    """Train the network ``params`` describe on ``splits`` and return its metrics.

    Raises TrialError when the loss becomes NaN or infinite, or when
    ``should_stop`` turns true (checked after every batch). ``keep`` is called
    with the trained and evaluated model (``export`` saves it there; a regression
    model gets a last layer that turns standardized predictions into target units).
    ``auc`` adds ``val_auc`` and ``test_auc`` (binary classification).
    ``user_model`` (reference, source SHA-256) builds with the user's function instead
    (``seqsweep.trial.user_model``). ``stops_at`` gets each epoch's metrics as the
    epoch ends; once it says so, training ends there and the result is ``pruned``.
    Keras' global state and the model's traced steps are freed afterwards, whatever
    happens.
    """
    import keras

    from models import build_network

    epochs = int(params.get("epochs", epochs))
    batch_size = int(params.get("batch_size", batch_size))
    started = time.perf_counter()
    model = None
    try:
        keras.utils.set_random_seed(seed)
        if user_model is None:
            model = build_network(
                splits.x_train.shape[1],
                splits.n_outputs,
                **Structure.from_params(params).build_kwargs(),
                task=str(splits.task),
                steps_per_execution=STEPS_PER_EXECUTION,
            )
        else:
            model = build_user_model(
                *user_model, params, splits.x_train.shape[1], splits.n_outputs, str(splits.task)
            )
        y_train, y_val, y_test = targets(keras, splits)
        pruning = prune_callbacks(keras, splits, stops_at)
        history = fit_leased(
            keras, model, splits, y_train, y_val, epochs=epochs, batch_size=batch_size,
            should_stop=should_stop, callbacks=[keras.callbacks.TerminateOnNaN(), *pruning],
        )  # fmt: skip
        _check_finite(history)
        test = evaluate_test(model, splits, y_test, batch_size)
        extra = {}
        if auc:
            for split, x, y in (
                ("val", splits.x_val, splits.y_val),
                ("test", splits.x_test, splits.y_test),
            ):
                extra[f"{split}_auc"] = binary_auc(
                    y, model.predict(x, batch_size=1024, verbose=0)[:, 1]
                )
        if keep is not None:
            keep(in_target_units(keras, model, splits))
    finally:
        if model is not None:
            release_traces(model)
        keras.backend.clear_session()
    return trial_result(
        history,
        test,
        duration_s=time.perf_counter() - started,
        device=current_device(),
        splits=splits,
        extra=extra,
        pruned=any(getattr(p, "stopped", False) for p in pruning),
    )


def prune_callbacks(
    keras: Any, splits: Splits, stops_at: Callable[[EpochRecord], bool] | None
) -> list[Any]:
    """A callback that ends ``fit`` after an epoch ``stops_at`` says is this trial's last."""
    if stops_at is None:
        return []
    decide = stops_at

    class PruneAt(keras.callbacks.Callback):  # type: ignore[misc]
        stopped = False

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if decide(epoch_record(epoch + 1, dict(logs or {}), splits)):
                self.stopped = True
                self.model.stop_training = True

    return [PruneAt()]


def epoch_record(epoch: int, logs: dict[str, float], splits: Splits) -> EpochRecord:
    """One epoch's metrics from Keras' logs (``loss``, ``val_loss``, ...), as stored:
    a regression's errors in the target's units."""
    if splits.task is Task.REGRESSION:
        mse, square = "mean_squared_error", splits.y_std * splits.y_std
        return EpochRecord(
            epoch=epoch,
            loss=_scaled(_log(logs, mse), square),
            accuracy=None,
            val_loss=_scaled(_log(logs, f"val_{mse}"), square),
            val_accuracy=None,
        )
    return EpochRecord(
        epoch=epoch,
        loss=_log(logs, "loss"),
        accuracy=_log(logs, "accuracy"),
        val_loss=_log(logs, "val_loss"),
        val_accuracy=_log(logs, "val_accuracy"),
    )


def _log(logs: dict[str, float], key: str) -> float | None:
    value = logs.get(key)
    return None if value is None else float(value)


def targets(keras: Any, splits: Splits) -> tuple[Any, Any, Any]:
    """Train, validation and test targets as the network learns them: one-hot classes, or
    standardized numbers (one column)."""
    ys = (splits.y_train, splits.y_val, splits.y_test)
    if splits.task is Task.REGRESSION:
        return ys[0].reshape(-1, 1), ys[1].reshape(-1, 1), ys[2].reshape(-1, 1)
    one_hot = [keras.utils.to_categorical(y, splits.n_classes) for y in ys]
    return one_hot[0], one_hot[1], one_hot[2]


def in_target_units(keras: Any, model: Any, splits: Splits) -> Any:
    """``model`` as users load it: a regression network ends in a layer that undoes the
    target's standardization, so it predicts in the target's own units."""
    if splits.task is not Task.REGRESSION:
        return model
    return keras.Sequential(
        [
            keras.Input(shape=(splits.x_train.shape[1],)),
            *model.layers,
            keras.layers.Rescaling(splits.y_std, offset=splits.y_mean, name="target_units"),
        ],
        name=model.name,
    )


def binary_auc(y: Any, score: Any) -> float:
    """Area under the ROC curve of scores for class 1 (Mann-Whitney U; ties count half)."""
    import numpy as np

    y = np.asarray(y) == 1
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: Any) -> Any:
    import numpy as np

    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def trial_result(
    history: dict[str, list[float]],
    test: dict[str, float],
    *,
    duration_s: float,
    device: str,
    pack: tuple[int, ...] | None = None,
    splits: Splits | None = None,
    extra: dict[str, float] | None = None,
    pruned: bool = False,
) -> TrialResult:
    """Check one trained model's ``fit`` history and ``evaluate`` scores; make its result.

    Classification: ``history`` holds ``loss``, ``accuracy``, ``val_loss`` and
    ``val_accuracy`` per epoch, ``test`` its ``loss`` and ``accuracy``. Regression
    (``splits.task``): ``mean_squared_error`` and ``mean_absolute_error`` of the
    standardized target, which come back in the target's units (val_loss is the MSE).
    ``extra`` adds final metrics (the AUCs). Raises TrialError for a loss that is not
    finite. Packed and unpacked trials both end here; ``pruned`` marks a trial its
    pruner stopped early (its history ends at its last epoch).
    """
    _check_finite(history)
    regression = splits is not None and splits.task is Task.REGRESSION
    needed = ("mean_squared_error", "mean_absolute_error") if regression else ("accuracy",)
    for name in needed:
        if f"val_{name}" not in history or name not in test:
            raise TrialError(
                f"the model reports no {name}; compile it with metrics={list(needed)!r}"
            )
    if not math.isfinite(test["loss"]):
        raise TrialError(
            f"test loss is {test['loss']}; the trained model is numerically "
            "unstable, try a lower learning_rate"
        )
    if splits is not None and splits.task is Task.REGRESSION:
        result = _regression_result(history, test, splits.y_std, duration_s, device, pack, extra)
        return dataclasses.replace(result, pruned=pruned)
    if not math.isfinite(test["accuracy"]):
        raise TrialError(f"test accuracy is {test['accuracy']}; try a lower learning_rate")
    records = tuple(
        EpochRecord(
            epoch=i + 1,
            loss=_get(history, "loss", i),
            accuracy=_get(history, "accuracy", i),
            val_loss=_get(history, "val_loss", i),
            val_accuracy=_get(history, "val_accuracy", i),
        )
        for i in range(len(history["loss"]))
    )
    last = records[-1]
    assert last.val_loss is not None and last.val_accuracy is not None
    metrics = {
        "val_accuracy": last.val_accuracy,
        "val_loss": last.val_loss,
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        **(extra or {}),
    }
    return TrialResult(
        val_loss=last.val_loss,
        val_accuracy=last.val_accuracy,
        test_loss=float(test["loss"]),
        test_accuracy=float(test["accuracy"]),
        duration_s=duration_s,
        device=device,
        epochs=records,
        pack=pack,
        metrics=metrics,
        pruned=pruned,
    )


def _regression_result(
    history: dict[str, list[float]],
    test: dict[str, float],
    y_std: float,
    duration_s: float,
    device: str,
    pack: tuple[int, ...] | None,
    extra: dict[str, float] | None,
) -> TrialResult:
    """Errors of the standardized target, scaled back: MSE by std², MAE by std."""
    mse, mae = "mean_squared_error", "mean_absolute_error"
    square = y_std * y_std
    records = tuple(
        EpochRecord(
            epoch=i + 1,
            loss=_scaled(_get(history, mse, i), square),
            accuracy=None,
            val_loss=_scaled(_get(history, f"val_{mse}", i), square),
            val_accuracy=None,
        )
        for i in range(len(history["loss"]))
    )
    metrics = {}
    for split, scores in (
        ("val", {m: history[f"val_{m}"][-1] for m in (mse, mae)}),
        ("test", test),
    ):
        loss = float(scores[mse]) * square
        metrics.update(
            {
                f"{split}_loss": loss,
                f"{split}_mae": float(scores[mae]) * y_std,
                f"{split}_rmse": math.sqrt(loss),
            }
        )
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise TrialError(f"{name} is {value}; training diverged, try a lower learning_rate")
    metrics.update(extra or {})
    return TrialResult(
        val_loss=metrics["val_loss"],
        val_accuracy=None,
        test_loss=metrics["test_loss"],
        test_accuracy=None,
        duration_s=duration_s,
        device=device,
        epochs=records,
        pack=pack,
        metrics=metrics,
    )


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def fit_leased(
    keras: Any,
    model: Any,
    splits: Splits,
    y_train: Any,
    y_val: Any,
    *,
    epochs: int,
    batch_size: int,
    should_stop: Callable[[], bool] | None,
    callbacks: Sequence[Any] = (),
    initial_epoch: int = 0,
    whose: str = "trial's lease",
) -> dict[str, list[float]]:
    """``fit`` on the training split, validated on the val split, and its history.

    Raises TrialError when ``should_stop`` turned true (the worker lost ``whose``): the
    trial now belongs to another worker, and what this one trained must not be recorded.
    """
    history = model.fit(
        splits.x_train,
        y_train,
        epochs=epochs,
        initial_epoch=initial_epoch,
        batch_size=batch_size,
        validation_data=(splits.x_val, y_val),
        callbacks=[*callbacks, *_stop_callbacks(keras, should_stop)],
        verbose=0,
    ).history
    if should_stop is not None and should_stop():
        raise TrialError(f"training stopped: this worker no longer holds the {whose}")
    return dict(history)


def evaluate_test(model: Any, splits: Splits, y_test: Any, batch_size: int) -> dict[str, float]:
    """The model's metrics on the test split (in batches of at least 256: no training)."""
    return dict(
        model.evaluate(
            splits.x_test, y_test, batch_size=max(batch_size, 256), verbose=0, return_dict=True
        )
    )


def _stop_callbacks(keras: Any, should_stop: Callable[[], bool] | None) -> list[Any]:
    """A callback that ends ``fit`` once ``should_stop()``; checked after each compiled call."""
    if should_stop is None:
        return []
    stop = should_stop

    class StopWhen(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if stop():
                self.model.stop_training = True

    return [StopWhen()]


def _get(history: dict[str, list[float]], key: str, i: int) -> float | None:
    values = history.get(key)
    return None if values is None or i >= len(values) else float(values[i])


def _check_finite(history: dict[str, list[float]]) -> None:
    for key in ("loss", "val_loss"):
        for i, value in enumerate(history.get(key, [])):
            if not math.isfinite(value):
                raise TrialError(
                    f"{key} became {value} at epoch {i + 1}; training diverged, "
                    "try a lower learning_rate"
                )


def current_device() -> str:
    """Name the device Keras trains on: ``cpu`` or ``gpu:N``, whatever the backend.

    ``N`` is the machine's index of the GPU (``nvidia-smi``'s), not the backend's: a
    process pinned to GPU 2 through ``CUDA_VISIBLE_DEVICES`` sees it as its device 0.
    """
    import keras

    backend = str(keras.backend.backend())
    if backend == "tensorflow":
        import tensorflow as tf

        return gpu_name(0) if tf.config.list_logical_devices("GPU") else "cpu"
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return "cpu" if device.platform == "cpu" else gpu_name(device.id)
    if backend == "torch":
        import torch

        return gpu_name(torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
    return backend


def gpu_name(visible: int) -> str:
    """``gpu:N`` for the backend's GPU ``visible``: N maps through ``CUDA_VISIBLE_DEVICES``."""
    shown = [p.strip() for p in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    if 0 <= visible < len(shown) and shown[visible].isdigit():
        return f"gpu:{int(shown[visible])}"
    return f"gpu:{visible}"  # not set, or GPUs named by UUID: the backend's own index
