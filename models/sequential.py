"""The built-in Sequential networks, in the Keras 3 API and backend-neutral.

The article's model (``adjust_model``) is the default case of :func:`build_network`:
two ``relu`` layers of ``dense_units``, each followed by dropout, and Adam.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras


def make_optimizer(
    kind: str, learning_rate: float, weight_decay: float = 0.0, momentum: float = 0.0
) -> keras.optimizers.Optimizer:
    """Keras' optimizer of ``kind``: adam, adamw, sgd (with momentum) or rmsprop."""
    if kind == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if kind == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    if kind == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    if kind == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    raise ValueError(f"unknown optimizer {kind!r}")


def hidden_layers(
    units: int, dropout: float, activation: str, *, batch_norm: bool, l2: float
) -> list[keras.layers.Layer]:
    """One hidden layer: Dense, then (with batch norm) normalization before the activation,
    then Dropout (kept at rate 0 too, so every network has the article's layer pattern)."""
    regularizer = keras.regularizers.L2(l2) if l2 else None
    if not batch_norm:
        return [
            keras.layers.Dense(units, activation=activation, kernel_regularizer=regularizer),
            keras.layers.Dropout(dropout),
        ]
    return [
        keras.layers.Dense(units, kernel_regularizer=regularizer),
        keras.layers.BatchNormalization(),
        keras.layers.Activation(activation),
        keras.layers.Dropout(dropout),
    ]


def build_network(
    n_features: int,
    n_outputs: int,
    *,
    units: Sequence[int],
    dropouts: Sequence[float],
    activations: Sequence[str],
    batch_norm: bool = False,
    l2: float = 0.0,
    optimizer: str = "adam",
    learning_rate: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    task: str = "classification",
    steps_per_execution: int = 1,
) -> keras.Sequential:
    """Build and compile a stack of hidden ``Dense`` layers and its head.

    Classification: a softmax head, categorical cross-entropy, accuracy. Regression: a
    linear head, mean squared error, mean absolute error. The article's ``input_shape=``
    argument becomes an explicit ``keras.Input``, which is how Keras 3 spells it.
    ``weight_decay`` applies to adamw, ``momentum`` to sgd (the trial layer passes
    seqsweep's defaults). ``steps_per_execution`` changes speed, not results.
    """
    layers: list[keras.layers.Layer] = [keras.Input(shape=(n_features,))]
    for size, rate, activation in zip(units, dropouts, activations, strict=True):
        layers += hidden_layers(size, rate, activation, batch_norm=batch_norm, l2=l2)
    regression = task == "regression"
    layers.append(keras.layers.Dense(n_outputs, activation=None if regression else "softmax"))
    model = keras.Sequential(layers, name="seqsweep_sequential")
    model.compile(
        loss="mean_squared_error" if regression else "categorical_crossentropy",
        optimizer=make_optimizer(optimizer, learning_rate, weight_decay, momentum),
        metrics=["mean_squared_error", "mean_absolute_error"] if regression else ["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def build_model(
    n_features: int,
    n_classes: int,
    *,
    dense_units: int,
    dropout_rate1: float,
    dropout_rate2: float,
    learning_rate: float,
    steps_per_execution: int = 1,
) -> keras.Sequential:
    """Build and compile the article's model (``adjust_model``) for given hyperparameters.

    Dense(relu) -> Dropout -> Dense(relu) -> Dropout -> Dense(softmax), trained
    with categorical cross-entropy and Adam, and scored by accuracy.
    """
    return build_network(
        n_features,
        n_classes,
        units=(dense_units, dense_units),
        dropouts=(dropout_rate1, dropout_rate2),
        activations=("relu", "relu"),
        learning_rate=learning_rate,
        steps_per_execution=steps_per_execution,
    )
