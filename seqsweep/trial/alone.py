"""One trial trained alone: build its model, ``fit``, evaluate. Backend-neutral Keras 3.

Keras is imported lazily, so that importing this (as the Celery parent process
does before forking) never initialises TensorFlow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from seqsweep.dataset import Splits
from seqsweep.db.records import EpochRecord, TrialResult
from seqsweep.errors import TrialError
from seqsweep.structure import Structure

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
) -> TrialResult:
    """Train the network ``params`` describe on ``splits`` and return its metrics.

    Raises TrialError when the loss becomes NaN or infinite, or when
    ``should_stop`` turns true (checked after every batch). ``keep`` is called
    with the trained and evaluated model (``export`` saves it there). Keras'
    global state is cleared afterwards, whatever happens.
    """
    import keras

    from models import build_network

    epochs = int(params.get("epochs", epochs))
    batch_size = int(params.get("batch_size", batch_size))
    started = time.perf_counter()
    try:
        keras.utils.set_random_seed(seed)
        model = build_network(
            splits.x_train.shape[1],
            splits.n_classes,
            **Structure.from_params(params).build_kwargs(),
            steps_per_execution=STEPS_PER_EXECUTION,
        )
        y_train = keras.utils.to_categorical(splits.y_train, splits.n_classes)
        y_val = keras.utils.to_categorical(splits.y_val, splits.n_classes)
        y_test = keras.utils.to_categorical(splits.y_test, splits.n_classes)
        history = model.fit(
            splits.x_train,
            y_train,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=(splits.x_val, y_val),
            callbacks=[keras.callbacks.TerminateOnNaN(), *stop_callbacks(keras, should_stop)],
            verbose=0,
        ).history
        if should_stop is not None and should_stop():
            raise TrialError("training stopped: this worker no longer holds the trial's lease")
        _check_finite(history)
        test = model.evaluate(
            splits.x_test, y_test, batch_size=max(batch_size, 256), verbose=0, return_dict=True
        )
        if keep is not None:
            keep(model)
    finally:
        keras.backend.clear_session()
    return trial_result(
        history, test, duration_s=time.perf_counter() - started, device=current_device()
    )


def trial_result(
    history: dict[str, list[float]],
    test: dict[str, float],
    *,
    duration_s: float,
    device: str,
    pack: tuple[int, ...] | None = None,
) -> TrialResult:
    """Check one trained model's ``fit`` history and ``evaluate`` scores; make its result.

    ``history`` holds ``loss``, ``accuracy``, ``val_loss`` and ``val_accuracy`` per
    epoch, ``test`` its ``loss`` and ``accuracy``. Raises TrialError for a loss that
    is not finite. Packed and unpacked trials both end here.
    """
    _check_finite(history)
    if not (math.isfinite(test["loss"]) and math.isfinite(test["accuracy"])):
        raise TrialError(
            f"test loss is {test['loss']}; the trained model is numerically "
            "unstable, try a lower learning_rate"
        )
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
    return TrialResult(
        val_loss=last.val_loss,
        val_accuracy=last.val_accuracy,
        test_loss=float(test["loss"]),
        test_accuracy=float(test["accuracy"]),
        duration_s=duration_s,
        device=device,
        epochs=records,
        pack=pack,
    )


def stop_callbacks(keras: Any, should_stop: Callable[[], bool] | None) -> list[Any]:
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
    """Name the device Keras trains on: ``cpu`` or ``gpu:N``, whatever the backend."""
    import keras

    backend = str(keras.backend.backend())
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu:0" if tf.config.list_logical_devices("GPU") else "cpu"
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return "cpu" if device.platform == "cpu" else f"gpu:{device.id}"
    if backend == "torch":
        import torch

        return f"gpu:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    return backend
