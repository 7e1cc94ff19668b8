"""The model builder reproduces the article's network and compile settings."""

from __future__ import annotations

import keras
import pytest

from models import build_model

PARAMS = {"dense_units": 48, "dropout_rate1": 0.25, "dropout_rate2": 0.4, "learning_rate": 3e-3}


def test_layers_follow_the_article() -> None:
    model = build_model(5, 3, **PARAMS)
    kinds = [(type(layer).__name__, layer.get_config()) for layer in model.layers]
    assert [k for k, _ in kinds] == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    dense1, drop1, dense2, drop2, out = (c for _, c in kinds)
    assert (dense1["units"], dense1["activation"]) == (48, "relu")
    assert drop1["rate"] == pytest.approx(0.25)
    assert (dense2["units"], dense2["activation"]) == (48, "relu")
    assert drop2["rate"] == pytest.approx(0.4)
    assert (out["units"], out["activation"]) == (3, "softmax")
    assert model.input_shape == (None, 5)
    assert model.output_shape == (None, 3)


def test_compiled_with_adam_crossentropy_and_accuracy() -> None:
    model = build_model(5, 2, **PARAMS)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-3)
    assert model.loss == "categorical_crossentropy"
    # Keras 3 reports compiled metrics once they are built; the config keeps them.
    assert model.get_compile_config()["metrics"] == ["accuracy"]


def test_a_structure_builds_its_layers_and_optimizer() -> None:
    from models import build_network

    model = build_network(
        4,
        1,
        units=(16, 8, 4),
        dropouts=(0.1, 0.0, 0.2),
        activations=("gelu", "gelu", "tanh"),
        batch_norm=True,
        l2=1e-4,
        optimizer="sgd",
        momentum=0.9,
        learning_rate=0.05,
        task="regression",
    )
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "BatchNormalization", "Activation", "Dropout"] * 3 + ["Dense"]
    assert [layer.units for layer in model.layers if type(layer).__name__ == "Dense"] == [
        16,
        8,
        4,
        1,
    ]
    assert model.layers[2].get_config()["activation"] == "gelu"
    assert model.layers[10].get_config()["activation"] == "tanh"
    assert model.layers[0].kernel_regularizer.get_config()["l2"] == pytest.approx(1e-4)
    assert model.layers[-1].get_config()["activation"] == "linear"
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.momentum) == pytest.approx(0.9)
    assert model.loss == "mean_squared_error"
