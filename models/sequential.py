"""The source article's Sequential model, in the Keras 3 API and backend-neutral."""

from __future__ import annotations

import keras


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
    with categorical cross-entropy and Adam, and scored by accuracy. The
    article's ``input_shape=`` argument becomes an explicit ``keras.Input``,
    which is how Keras 3 spells it. ``steps_per_execution`` changes speed, not results.
    """
    model = keras.Sequential(
        [
            keras.Input(shape=(n_features,)),
            keras.layers.Dense(dense_units, activation="relu"),
            keras.layers.Dropout(dropout_rate1),
            keras.layers.Dense(dense_units, activation="relu"),
            keras.layers.Dropout(dropout_rate2),
            keras.layers.Dense(n_classes, activation="softmax"),
        ],
        name="seqsweep_sequential",
    )
    model.compile(
        loss="categorical_crossentropy",
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model
