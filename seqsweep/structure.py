"""The network a trial's parameters describe: the one place that reads structure params.

The search space (``scheduler.space``) validates these names, sampling drops the
conditional ones a trial does not use, and the trial layer turns a trial's params
into a :class:`Structure` that the builders in ``models/`` take as plain values.
Every default of the structure lives here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_LAYERS = 8
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "elu", "selu")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
#: Parameters of one hidden layer: a shared name, or ``name1`` ... ``name8`` per layer.
LAYER_PARAMS = ("dense_units", "dropout_rate", "activation")
#: Structure parameters that hold for the whole network.
NETWORK_PARAMS = ("n_layers", "batch_norm", "l2", "optimizer", "learning_rate", "weight_decay")
#: What a parameter is when the space leaves it out: the article's network.
DEFAULTS: dict[str, Any] = {
    "n_layers": 2,
    "dropout_rate": 0.0,
    "activation": "relu",
    "batch_norm": False,
    "l2": 0.0,
    "optimizer": "adam",
    #: Keras' own default for AdamW.
    "weight_decay": 0.004,
}
#: Parameters whose value decides which others a trial uses (see :func:`active_params`).
CONDITIONS = ("n_layers", "optimizer")
#: SGD is plain SGD with this momentum (not searched).
SGD_MOMENTUM = 0.9

_LAYER_NAME = re.compile(r"^(dense_units|dropout_rate|activation)([1-8])$")


def layer_name(shared: str, layer: int) -> str:
    """Per-layer name of ``shared`` for hidden layer ``layer`` (1-based): ``dense_units3``."""
    return f"{shared}{layer}"


def split_layer_name(name: str) -> tuple[str, int] | None:
    """``("dense_units", 5)`` for ``dense_units5``; None for a name of no single layer."""
    match = _LAYER_NAME.match(name)
    return None if match is None else (match.group(1), int(match.group(2)))


def structure_names() -> tuple[str, ...]:
    """Every structure parameter name, in the order spaces and reports list them."""
    per_layer = tuple(
        layer_name(shared, i) for shared in LAYER_PARAMS for i in range(1, MAX_LAYERS + 1)
    )
    return (*LAYER_PARAMS, *per_layer, *NETWORK_PARAMS)


def active_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without the conditional ones this trial does not use.

    A layer's parameters past the trial's ``n_layers`` and ``weight_decay`` without
    ``adamw`` are absent (not null), so reports and importance never see a value that
    did nothing.
    """
    n_layers = int(params.get("n_layers", DEFAULTS["n_layers"]))
    optimizer = params.get("optimizer", DEFAULTS["optimizer"])
    kept = {}
    for name, value in params.items():
        layer = split_layer_name(name)
        if layer is not None and layer[1] > n_layers:
            continue
        if name == "weight_decay" and optimizer != "adamw":
            continue
        kept[name] = value
    return kept


@dataclass(frozen=True)
class Structure:
    """A built-in network: hidden layers (units, dropout, activation), then the head."""

    units: tuple[int, ...]
    dropouts: tuple[float, ...]
    activations: tuple[str, ...]
    batch_norm: bool
    l2: float
    optimizer: str
    learning_rate: float
    weight_decay: float

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Structure:
        """Read a trial's params (validated by its space), filling in the defaults."""
        n_layers = int(params.get("n_layers", DEFAULTS["n_layers"]))

        def per_layer(shared: str, i: int) -> Any:
            own = layer_name(shared, i)
            if own in params:
                return params[own]
            if shared in params:
                return params[shared]
            if shared in DEFAULTS:
                return DEFAULTS[shared]
            raise KeyError(f"trial params name no {own} or {shared}")

        layers = range(1, n_layers + 1)
        return cls(
            units=tuple(int(per_layer("dense_units", i)) for i in layers),
            dropouts=tuple(float(per_layer("dropout_rate", i)) for i in layers),
            activations=tuple(str(per_layer("activation", i)) for i in layers),
            batch_norm=bool(params.get("batch_norm", DEFAULTS["batch_norm"])),
            l2=float(params.get("l2", DEFAULTS["l2"])),
            optimizer=str(params.get("optimizer", DEFAULTS["optimizer"])),
            learning_rate=float(params["learning_rate"]),
            weight_decay=float(params.get("weight_decay", DEFAULTS["weight_decay"])),
        )

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``models.build_network`` for this structure."""
        return {
            "units": self.units,
            "dropouts": self.dropouts,
            "activations": self.activations,
            "batch_norm": self.batch_norm,
            "l2": self.l2,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "momentum": SGD_MOMENTUM,
        }

    @property
    def shape(self) -> tuple[Any, ...]:
        """What members of one pack share; they may differ only in rates."""
        return (self.units, self.activations, self.batch_norm, self.optimizer)

    def describe(self) -> str:
        """One line, e.g. ``3 x Dense 128-64-32 gelu, batch norm, sgd``."""
        acts = sorted(set(self.activations), key=self.activations.index)
        text = f"{len(self.units)} x Dense {'-'.join(map(str, self.units))} {'/'.join(acts)}"
        return text + (", batch norm" if self.batch_norm else "") + f", {self.optimizer}"
