"""Many built-in networks of one structure trained as one computation: packed training.

Keras spends about 100x the arithmetic of a small network on per-step overhead. A pack
stacks K members' weights along a leading axis, so one step runs a batched matmul per
layer for all K members instead of K separate train steps. Members share the
structure's shape (the units and activation of every hidden layer, batch norm, the
optimizer kind, the task); each keeps what makes it its own trial: its initial weights
(those its network gets alone from the trial's seed), its dropout rates, its learning
rate, weight decay and L2 factor, its optimizer state, batch-norm statistics, and its
own loss and metrics. The members share the batches, in the same order, and one
dropout random op per layer.

Losses add up across members, whose weights are disjoint, so each member's gradient is
exactly its own loss's gradient. Backend-neutral: plain ``keras.ops``, and Keras'
``fit`` drives it on TensorFlow, JAX or PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from models.fused import fused_update
from models.sequential import build_network, make_optimizer

#: The prefix of a pack's per-member metrics in Keras' logs (:func:`split_members`).
MEMBER = "member_"
_BN_EPSILON = 1e-3  # Keras' BatchNormalization defaults, which the members alone use
_BN_MOMENTUM = 0.99


@dataclass(frozen=True)
class Member:
    """What one member may hold of its own: its rates."""

    dropouts: tuple[float, ...]
    learning_rate: float
    l2: float = 0.0
    weight_decay: float = 0.0


def packed_optimizer(
    kind: str, members: Sequence[Member], momentum: float
) -> keras.optimizers.Optimizer:
    """Keras' optimizer of ``kind`` whose learning rate (and AdamW's weight decay) is a
    vector: member k of every variable steps with its own rate.

    Each optimizer's update is elementwise in the rate, so a per-member rate broadcast
    over a variable's member axis is K independent optimizers. The rates are optimizer
    variables, not constants of the traced step, so that :func:`reset_pack` can give a
    built pack new members (JAX's trainer passes only tracked variables into its step).
    """
    base = type(make_optimizer(kind, 1.0, 0.0, momentum))
    k = len(members)

    class Packed(base):  # type: ignore[valid-type, misc]
        def build(self, variables: Any) -> None:
            if self.built:
                return
            super().build(variables)
            self.member_rates = self.add_variable((k,), name="member_learning_rates")
            self.member_decays = self.add_variable((k,), name="member_weight_decays")
            set_member_rates(self, members)

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            rates = _per_member(self.member_rates, variable)
            fused = fused_update(self, variable, super().update_step)
            if fused is None:
                super().update_step(gradient, variable, rates)
            else:
                fused(gradient, rates)

        def _apply_weight_decay(self, variables: Any) -> None:
            if kind != "adamw":
                return
            for variable in variables:
                if self._use_weight_decay(variable):
                    wd = _per_member(self.member_decays, variable)
                    lr = _per_member(self.member_rates, variable)
                    variable.assign(variable - variable * wd * lr)

    extra: dict[str, Any] = {"momentum": momentum} if kind == "sgd" else {}
    if kind == "adamw":
        extra["weight_decay"] = 1.0  # switches decay on; the rates are the members'
    return Packed(learning_rate=1.0, **extra)


def set_member_rates(optimizer: Any, members: Sequence[Member]) -> None:
    """Give a built packed optimizer ``members``' learning rates and weight decays."""
    optimizer.member_rates.assign([m.learning_rate for m in members])
    optimizer.member_decays.assign([m.weight_decay for m in members])


def _per_member(values: Any, variable: Any) -> Any:
    shape = (values.shape[0],) + (1,) * (len(variable.shape) - 1)
    return ops.reshape(ops.cast(values, variable.dtype), shape)


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


class PackedBatchNorm(keras.layers.Layer):
    """BatchNormalization per member: statistics over each member's batch, (K, B, U)."""

    def __init__(self, members: int, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        shape = (members, 1, units)
        self.gamma = self.add_weight(shape=shape, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=shape, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(
            shape=shape, initializer="zeros", name="moving_mean", trainable=False
        )
        self.moving_variance = self.add_weight(
            shape=shape, initializer="ones", name="moving_variance", trainable=False
        )

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if training:
            mean, variance = ops.moments(inputs, axes=[1], keepdims=True)
            m = _BN_MOMENTUM
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        # tf.nn.batch_normalization's own arithmetic, written out: the JAX backend's
        # ops.batch_normalization takes only 1-D statistics, not one row per member.
        inv = ops.rsqrt(variance + _BN_EPSILON) * self.gamma
        return inputs * inv + (self.beta - mean * inv)


class PackedDropout(keras.layers.Layer):
    """Dropout with a rate per member, all masks drawn in one random op.

    One op instead of one per member makes a pack of 32 about 2.5x faster. The price:
    a member's masks depend on the pack's seed and its place in the pack, so a trial
    trained packed and alone sees different (equally distributed) masks. The rates are
    a variable so that a built pack takes new members; whether any is above zero is
    part of the traced step, and so of the pack's shape (:func:`reuse_key`).
    """

    def __init__(self, rates: Sequence[float], seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.active = any(rates)
        self.rates = self.add_weight(
            shape=(len(rates),), initializer="zeros", name="rates", trainable=False
        )
        self.rates.assign([float(r) for r in rates])
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or not self.active:
            return inputs
        rates = ops.reshape(ops.cast(self.rates, inputs.dtype), (-1, 1, 1))
        draw = keras.random.uniform(ops.shape(inputs), seed=self.generator, dtype=inputs.dtype)
        return ops.where(draw >= rates, inputs / (1.0 - rates), 0.0)


class PackedMetrics(keras.metrics.Metric):
    """Per-member means over an epoch, reported as one vector of K per metric:
    ``member_loss``, ``member_accuracy`` (or, for regression, ``member_mean_squared_error``
    and ``member_mean_absolute_error``); :func:`split_members` names each member's.

    Vectors rather than a scalar per member because Keras computes ``result()`` at every
    step: K scalars are 2K kernels a step (a slice and a division each), which TensorFlow's
    executor dispatches one by one, and for narrow packs that overhead is most of a step.
    """

    def __init__(self, members: int, regression: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.regression = regression
        self.loss_sum = self.add_variable((members,), initializer="zeros", name="loss_sum")
        self.second = self.add_variable((members,), initializer="zeros", name="second")
        self.third = self.add_variable((members,), initializer="zeros", name="third")
        self.count = self.add_variable((), initializer="zeros", name="count")
        #: The step's L2 penalty per member, set by the model's compute_loss: the JAX
        #: trainer hands compute_metrics only the metrics' variables, not the kernels.
        self.step_penalties = self.add_variable(
            (members,), initializer="zeros", name="step_penalties"
        )

    def update_state(
        self, y_true: Any, outputs: Any, penalties: Any = None, sample_weight: Any = None
    ) -> None:
        rows = ops.cast(ops.shape(y_true)[0], self.dtype)
        data = ops.cast(member_losses(y_true, outputs, self.regression), self.dtype)  # (K, B)
        extra = 0.0 if penalties is None else ops.cast(penalties, self.dtype) * rows
        self.loss_sum.assign_add(ops.sum(data, axis=1) + extra)
        if self.regression:
            error = outputs - ops.cast(y_true, outputs.dtype)[None]
            squares = ops.cast(ops.mean(error**2, axis=-1), self.dtype)
            self.second.assign_add(ops.sum(squares, axis=1))
            self.third.assign_add(ops.sum(ops.cast(ops.mean(ops.abs(error), -1), self.dtype), 1))
        else:
            hits = ops.equal(ops.argmax(outputs, axis=-1), ops.argmax(y_true, axis=-1)[None, :])
            self.second.assign_add(ops.sum(ops.cast(hits, self.dtype), axis=1))
        self.count.assign_add(rows)

    def result(self) -> dict[str, Any]:
        n = ops.maximum(self.count, 1.0)
        if self.regression:
            return {
                f"{MEMBER}loss": self.loss_sum / n,
                f"{MEMBER}mean_squared_error": self.second / n,
                f"{MEMBER}mean_absolute_error": self.third / n,
            }
        return {f"{MEMBER}loss": self.loss_sum / n, f"{MEMBER}accuracy": self.second / n}


def split_members(logs: Mapping[str, Any]) -> dict[str, Any]:
    """A pack's logs (``fit``'s history or ``evaluate``'s dict) with each per-member vector
    ``[val_]member_<metric>`` as ``[val_]m{k}_<metric>`` for every member k: a list of
    floats per epoch from a history, a float from an evaluation. Other keys as they are."""
    out: dict[str, Any] = {}
    for key, value in logs.items():
        prefix, found, metric = key.partition(MEMBER)
        if not found:
            out[key] = value
            continue
        values = np.asarray(value, dtype=float)  # (epochs, K) or (K,)
        for k in range(values.shape[-1]):
            out[f"{prefix}m{k}_{metric}"] = values[..., k].tolist()
    return out


def member_losses(y_true: Any, outputs: Any, regression: bool = False) -> Any:
    """Each member's loss on each row, (K, B): categorical cross-entropy of the logits, or
    the squared error."""
    if regression:
        return ops.mean((outputs - ops.cast(y_true, outputs.dtype)[None]) ** 2, axis=-1)
    return -ops.sum(
        ops.cast(y_true, outputs.dtype)[None] * ops.log_softmax(outputs, axis=-1), axis=-1
    )


class PackedModel(keras.Model):
    """K networks of one structure; ``call`` returns outputs of shape (K, B, outputs)."""

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        *,
        units: Sequence[int],
        activations: Sequence[str],
        batch_norm: bool,
        members: Sequence[Member],
        dropout_seeds: Sequence[int],
        task: str = "classification",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        k = len(members)
        self.members, self.n_features, self.n_outputs = k, n_features, n_outputs
        self.units, self.activation_names = tuple(units), tuple(activations)
        self.batch_norm, self.task = batch_norm, task
        self.has_l2 = any(m.l2 for m in members)
        self.l2 = self.add_weight(shape=(k,), initializer="zeros", name="l2", trainable=False)
        self.l2.assign([m.l2 for m in members])
        self.hidden = [
            PackedDense(k, size, None if batch_norm else activation)
            for size, activation in zip(units, activations, strict=True)
        ]
        self.norms = [PackedBatchNorm(k, size) for size in units] if batch_norm else []
        self.drops = [
            PackedDropout([m.dropouts[i] for m in members], dropout_seeds[i])
            for i in range(len(units))
        ]
        self.head = PackedDense(k, n_outputs)
        self.packed_metrics = PackedMetrics(k, task == "regression", name="members")
        self.key = reuse_key(members)

    def call(self, x: Any, training: bool | None = None) -> Any:
        h = ops.broadcast_to(x[None], (self.members, *ops.shape(x)))
        for i, dense in enumerate(self.hidden):
            h = dense(h)
            if self.batch_norm:
                h = self.norms[i](h, training=training)
                h = keras.activations.get(self.activation_names[i])(h)
            h = self.drops[i](h, training=training)
        return self.head(h)

    def penalties(self) -> Any:
        """Each member's L2 penalty on its hidden kernels, (K,); None without L2."""
        if not self.has_l2:
            return None
        factors = ops.cast(self.l2, self.hidden[0].kernel.dtype)
        squares = sum(ops.sum(ops.square(d.kernel), axis=(1, 2)) for d in self.hidden)
        return factors * squares

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        # Mean over rows per member, summed over members: member k's gradient is its own.
        loss = ops.sum(ops.mean(member_losses(y, y_pred, self.task == "regression"), axis=1))
        penalties = self.penalties()
        if penalties is not None:
            self.packed_metrics.step_penalties.assign(ops.stop_gradient(penalties))
        return loss if penalties is None else loss + ops.sum(penalties)

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        held = self.packed_metrics.step_penalties if self.has_l2 else None
        self.packed_metrics.update_state(y, y_pred, held)
        return self.get_metrics_result()


def build_packed(
    n_features: int,
    n_outputs: int,
    *,
    units: Sequence[int],
    activations: Sequence[str],
    batch_norm: bool = False,
    optimizer: str = "adam",
    momentum: float = 0.0,
    members: Sequence[Member],
    seeds: Sequence[int],
    dropout_seeds: Sequence[int],
    task: str = "classification",
    steps_per_execution: int = 1,
) -> PackedModel:
    """Build and compile a pack; member k starts from the weights its network gets alone
    under ``keras.utils.set_random_seed(seeds[k])``. ``dropout_seeds`` seed each hidden
    layer's masks."""
    model = PackedModel(
        n_features, n_outputs, units=units, activations=activations, batch_norm=batch_norm,
        members=members, dropout_seeds=dropout_seeds, task=task,
    )  # fmt: skip
    model(ops.zeros((1, n_features)))  # creates the weights
    _assign_starts(model, seeds)
    model.compile(
        optimizer=packed_optimizer(optimizer, members, momentum),
        steps_per_execution=steps_per_execution,
    )
    # Built now rather than by the first fit, so that its fresh state can be kept.
    model.optimizer.build(model.trainable_variables)
    model.fresh_optimizer = [ops.convert_to_numpy(v) for v in model.optimizer.variables]
    return model


def reuse_key(members: Sequence[Member]) -> tuple[Any, ...]:
    """What the traced step of a pack depends on besides its shape: its size, which
    layers drop out at all, and whether any member has an L2 penalty."""
    layers = len(members[0].dropouts)
    return (
        len(members),
        tuple(any(m.dropouts[i] for m in members) for i in range(layers)),
        any(m.l2 for m in members),
    )


def reset_pack(
    model: PackedModel,
    members: Sequence[Member],
    seeds: Sequence[int],
    dropout_seeds: Sequence[int],
) -> None:
    """Make a trained pack what :func:`build_packed` would build for these members and
    seeds (same :func:`reuse_key`): initial weights and batch-norm statistics, rates,
    dropout seeds, a fresh optimizer (moments and step count). Training it again traces
    nothing new."""
    if reuse_key(members) != model.key:
        raise ValueError(f"a pack of {reuse_key(members)} cannot reuse {model.key}")
    _assign_starts(model, seeds)
    for i, drop in enumerate(model.drops):
        drop.rates.assign([float(m.dropouts[i]) for m in members])
        drop.generator.state.assign(
            ops.convert_to_tensor([dropout_seeds[i], 0], dtype=drop.generator.state.dtype)
        )
    model.l2.assign([m.l2 for m in members])
    for variable, value in zip(model.optimizer.variables, model.fresh_optimizer, strict=True):
        variable.assign(value)
    set_member_rates(model.optimizer, members)


def _assign_starts(model: PackedModel, seeds: Sequence[int]) -> None:
    """Member k's weights: those its network alone draws under ``seeds[k]``. One network
    is built per distinct seed: --pack-size auto times packs of one trial's copies, up
    to 256 of them."""
    shape = (model.units, model.activation_names, model.batch_norm, model.task)
    by_seed = {
        seed: _initial_weights(model.n_features, model.n_outputs, *shape, seed)
        for seed in dict.fromkeys(seeds)
    }
    starts = [by_seed[seed] for seed in seeds]
    for i, layer in enumerate(_weighted(model)):
        for j, variable in enumerate(_variables(layer)):
            stacked = ops.stack([s[i][j] for s in starts])
            variable.assign(ops.reshape(stacked, variable.shape))


def _weighted(model: PackedModel) -> list[Any]:
    """The pack's layers with weights, in the order a member's network alone holds them."""
    layers: list[Any] = []
    for i, dense in enumerate(model.hidden):
        layers.append(dense)
        if model.batch_norm:
            layers.append(model.norms[i])
    return [*layers, model.head]


def _variables(layer: Any) -> list[Any]:
    if isinstance(layer, PackedBatchNorm):
        return [layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance]
    return [layer.kernel, layer.bias]


def _alone(
    n_features: int,
    n_outputs: int,
    units: Sequence[int],
    activations: Sequence[str],
    batch_norm: bool,
    task: str,
    member: Member | None = None,
    optimizer: str = "adam",
    momentum: float = 0.0,
) -> keras.Sequential:
    m = member or Member(dropouts=(0.0,) * len(units), learning_rate=1e-3)
    return build_network(
        n_features, n_outputs, units=units, dropouts=m.dropouts, activations=activations,
        batch_norm=batch_norm, l2=m.l2, optimizer=optimizer, learning_rate=m.learning_rate,
        weight_decay=m.weight_decay, momentum=momentum, task=task,
    )  # fmt: skip


def _initial_weights(
    n_features: int,
    n_outputs: int,
    units: Sequence[int],
    activations: Sequence[str],
    batch_norm: bool,
    task: str,
    seed: int,
) -> list[list[Any]]:
    """A member's starting weights, per weighted layer, as its network alone draws them."""
    keras.utils.set_random_seed(seed)
    alone = _alone(n_features, n_outputs, units, activations, batch_norm, task)
    weighted = [layer for layer in alone.layers if layer.weights]
    return [[ops.convert_to_numpy(v) for v in layer.weights] for layer in weighted]


def extract_member(
    model: PackedModel, k: int, member: Member, optimizer: str = "adam", momentum: float = 0.0
) -> keras.Sequential:
    """Member ``k`` as a standalone, compiled network with the pack's trained weights."""
    alone = _alone(
        model.n_features, model.n_outputs, model.units, model.activation_names,
        model.batch_norm, model.task, member, optimizer, momentum,
    )  # fmt: skip
    weighted = [layer for layer in alone.layers if layer.weights]
    for packed_layer, layer in zip(_weighted(model), weighted, strict=True):
        values = [ops.convert_to_numpy(v[k]) for v in _variables(packed_layer)]
        layer.set_weights([v.reshape(w.shape) for v, w in zip(values, layer.weights, strict=True)])
    return alone
