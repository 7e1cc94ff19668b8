"""Many of the article's models trained as one computation: packed training.

Keras spends about 100x the arithmetic of this small network on per-step overhead. A pack
stacks K members' weights along a leading axis, so one step runs three batched matmuls
for all K members instead of K separate train steps. Each member keeps what makes it
its own trial: its initial weights (those the article's model gets from the trial's
seed), its dropout rates, its Adam state and learning rate, and its own loss and
accuracy. The members share the batches, in the same order, and one dropout random op.

Losses add up across members, whose weights are disjoint, so each member's gradient is
exactly its own loss's gradient. Backend-neutral: plain ``keras.ops``, and Keras'
``fit`` drives it on TensorFlow, JAX or PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from models.sequential import build_model


class PackedAdam(keras.optimizers.Adam):
    """Adam whose learning rate is a vector: member k of every variable steps with ``lrs[k]``.

    Adam's update is elementwise, so a per-member rate broadcast over a variable's
    member axis is K independent Adams.
    """

    def __init__(self, learning_rates: Sequence[float], **kwargs: Any) -> None:
        super().__init__(learning_rate=1.0, **kwargs)
        self._rates = [float(r) for r in learning_rates]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        shape = (len(self._rates),) + (1,) * (len(variable.shape) - 1)
        rates = ops.reshape(ops.convert_to_tensor(self._rates, dtype=variable.dtype), shape)
        super().update_step(gradient, variable, rates)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "learning_rates": self._rates}


class PackedDense(keras.layers.Layer):
    """K dense layers side by side: (K, B, in) -> (K, B, units)."""

    def __init__(self, members: int, units: int, activation: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.members, self.units = members, units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.kernel = self.add_weight(
            shape=(self.members, input_shape[-1], self.units), initializer="zeros", name="kernel"
        )
        self.bias = self.add_weight(
            shape=(self.members, 1, self.units), initializer="zeros", name="bias"
        )

    def call(self, inputs: Any) -> Any:
        return self.activation(ops.matmul(inputs, self.kernel) + self.bias)


class PackedDropout(keras.layers.Layer):
    """Dropout with a rate per member, all masks drawn in one random op.

    One op instead of one per member makes a pack of 32 about 2.5x faster. The price:
    a member's masks depend on the pack's seed and its place in the pack, so a trial
    trained packed and alone sees different (equally distributed) masks.
    """

    def __init__(self, rates: Sequence[float], seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rates = [float(r) for r in rates]
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or not any(self.rates):
            return inputs
        rates = ops.reshape(ops.convert_to_tensor(self.rates, dtype=inputs.dtype), (-1, 1, 1))
        draw = keras.random.uniform(ops.shape(inputs), seed=self.generator, dtype=inputs.dtype)
        return ops.where(draw >= rates, inputs / (1.0 - rates), 0.0)


class PackedMetrics(keras.metrics.Metric):
    """Per-member mean loss and accuracy over an epoch, reported as ``m{k}_loss``..."""

    def __init__(self, members: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.members = members
        self.loss_sum = self.add_variable((members,), initializer="zeros", name="loss_sum")
        self.correct = self.add_variable((members,), initializer="zeros", name="correct")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true: Any, logits: Any, sample_weight: Any = None) -> None:
        losses = member_losses(y_true, logits)  # (K, B)
        hits = ops.cast(
            ops.equal(ops.argmax(logits, axis=-1), ops.argmax(y_true, axis=-1)[None, :]),
            self.dtype,
        )
        self.loss_sum.assign_add(ops.sum(ops.cast(losses, self.dtype), axis=1))
        self.correct.assign_add(ops.sum(hits, axis=1))
        self.count.assign_add(ops.cast(ops.shape(y_true)[0], self.dtype))

    def result(self) -> dict[str, Any]:
        n = ops.maximum(self.count, 1.0)
        out = {}
        for k in range(self.members):
            out[f"m{k}_loss"] = self.loss_sum[k] / n
            out[f"m{k}_accuracy"] = self.correct[k] / n
        return out


def member_losses(y_true: Any, logits: Any) -> Any:
    """Categorical cross-entropy of each member on each row: (K, B)."""
    return -ops.sum(
        ops.cast(y_true, logits.dtype)[None] * ops.log_softmax(logits, axis=-1), axis=-1
    )


class PackedModel(keras.Model):
    """K copies of the article's network; ``call`` returns logits of shape (K, B, classes)."""

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        dense_units: int,
        dropout_rates: Sequence[tuple[float, float]],
        seeds: Sequence[int],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        k = len(seeds)
        self.members, self.n_features, self.n_classes = k, n_features, n_classes
        self.dense1 = PackedDense(k, dense_units, "relu")
        pack_seed = int(seeds[0]) % 2**31
        self.drop1 = PackedDropout([r[0] for r in dropout_rates], pack_seed + 1)
        self.dense2 = PackedDense(k, dense_units, "relu")
        self.drop2 = PackedDropout([r[1] for r in dropout_rates], pack_seed + 2)
        self.head = PackedDense(k, n_classes)
        self.packed_metrics = PackedMetrics(k, name="members")

    def call(self, x: Any, training: bool | None = None) -> Any:
        h = ops.broadcast_to(x[None], (self.members, *ops.shape(x)))
        h = self.drop1(self.dense1(h), training=training)
        h = self.drop2(self.dense2(h), training=training)
        return self.head(h)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        # Mean over rows per member, summed over members: member k's gradient is its own.
        return ops.sum(ops.mean(member_losses(y, y_pred), axis=1))

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        self.packed_metrics.update_state(y, y_pred)
        return self.get_metrics_result()


def build_packed(
    n_features: int,
    n_classes: int,
    *,
    dense_units: int,
    members: Sequence[dict[str, float]],
    seeds: Sequence[int],
    steps_per_execution: int = 1,
) -> PackedModel:
    """Build and compile a pack; member k starts from the weights the article's model
    gets under ``keras.utils.set_random_seed(seeds[k])``.

    ``members`` holds each member's ``dropout_rate1``, ``dropout_rate2`` and ``learning_rate``.
    """
    model = PackedModel(
        n_features,
        n_classes,
        dense_units,
        [(m["dropout_rate1"], m["dropout_rate2"]) for m in members],
        seeds,
    )
    model(ops.zeros((1, n_features)))  # creates the weights
    starts = [_initial_weights(n_features, n_classes, dense_units, seed) for seed in seeds]
    # The article's model holds (kernel, bias) of its three Dense layers in this order.
    for i, layer in enumerate((model.dense1, model.dense2, model.head)):
        layer.kernel.assign(ops.stack([s[2 * i] for s in starts]))
        layer.bias.assign(ops.stack([s[2 * i + 1][None] for s in starts]))
    model.compile(
        optimizer=PackedAdam([m["learning_rate"] for m in members]),
        steps_per_execution=steps_per_execution,
    )
    return model


def _initial_weights(n_features: int, n_classes: int, dense_units: int, seed: int) -> list[Any]:
    keras.utils.set_random_seed(seed)
    alone = build_model(
        n_features,
        n_classes,
        dense_units=dense_units,
        dropout_rate1=0.0,
        dropout_rate2=0.0,
        learning_rate=1e-3,
    )
    return [v.numpy() if hasattr(v, "numpy") else v for v in alone.get_weights()]


def extract_member(model: PackedModel, k: int, member: dict[str, float]) -> keras.Sequential:
    """Member ``k`` as a standalone, compiled article model with the pack's trained weights."""
    alone = build_model(
        model.n_features,
        model.n_classes,
        dense_units=model.dense1.units,
        dropout_rate1=member["dropout_rate1"],
        dropout_rate2=member["dropout_rate2"],
        learning_rate=member["learning_rate"],
    )
    weights = []
    for layer in (model.dense1, model.dense2, model.head):
        weights += [ops.convert_to_numpy(layer.kernel[k]), ops.convert_to_numpy(layer.bias[k][0])]
    alone.set_weights(weights)
    return alone
