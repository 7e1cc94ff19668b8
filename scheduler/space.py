"""The search space: plain, frozen data that validates itself and round-trips through JSON.

A space maps each hyperparameter of the network to a distribution. The article's
four are the default; structure parameters (``n_layers``, per-layer ``dense_units3``,
``activation``, ``batch_norm``, ``optimizer``, ...; see ``seqsweep.structure``) are
optional. Files (YAML or JSON) use the same shape as :meth:`SearchSpace.to_dict`::

    dense_units:   {type: choice, values: [32, 64, 128, 256, 512]}
    dropout_rate1: {type: uniform, low: 0.0, high: 0.5}
    dropout_rate2: {type: uniform, low: 0.0, high: 0.5}
    learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
    epochs:        {type: int, low: 5, high: 20}       # optional: searchable epochs
    batch_size:    64                                   # a plain value is fixed
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from seqsweep.errors import SpaceError, UsageError
from seqsweep.files import read_input
from seqsweep.settings import BOUNDS, MAX_SPACE_FILE_BYTES, short_value
from seqsweep.structure import (
    ACTIVATIONS,
    DEFAULTS,
    LAYER_PARAMS,
    MAX_LAYERS,
    OPTIMIZERS,
    layer_name,
    structure_names,
)

Scalar = int | float | str | bool

#: Every parameter a space may hold, in the order spaces and reports list them.
ALLOWED_PARAMS = (
    "n_layers",
    *(n for n in structure_names() if n not in ("n_layers",)),
    "epochs",
    "batch_size",
)
#: How an error names the allowed parameters (the per-layer names, summarized).
ALLOWED_TEXT = (
    "n_layers, dense_units (or dense_units1 ... dense_units8), dropout_rate (or "
    "dropout_rate1 ...), activation (or activation1 ...), batch_norm, l2, optimizer, "
    "learning_rate, weight_decay, epochs, batch_size"
)
_LAYER_SHARED = {f"{shared}{i}": shared for shared in LAYER_PARAMS for i in range(1, 9)}
INT_PARAMS = frozenset(
    {"n_layers", "epochs", "batch_size"}
    | {n for n, shared in _LAYER_SHARED.items() if shared == "dense_units"}
    | {"dense_units"}
)
_NAME = re.compile(r"^[A-Za-z_]\w*$")
#: Largest integer magnitude a space may hold: exact as a float and as a JSON
#: number everywhere, and within the sampler's int64 range.
MAX_INT = 2**53


def _rule_bounded(name: str) -> Callable[[float], str | None]:
    bound = BOUNDS[name]

    def rule(v: float) -> str | None:
        return None if bound.low <= v <= bound.high else f"must be in [{bound.low}, {bound.high}]"

    return rule


def _rule_layers(v: Any) -> str | None:
    return None if 1 <= v <= MAX_LAYERS else f"must be in [1, {MAX_LAYERS}]"


def _rule_dropout(v: Any) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


def _rule_learning_rate(v: Any) -> str | None:
    return None if v > 0 and math.isfinite(v) else "must be > 0"


def _rule_non_negative(v: Any) -> str | None:
    return None if v >= 0 and math.isfinite(v) else "must be >= 0"


def _one_of(names: tuple[str, ...]) -> Callable[[object], str | None]:
    def rule(v: object) -> str | None:
        return None if v in names else f"must be one of {', '.join(names)}"

    return rule


def _rule_bool(v: object) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


#: The rule every value of a parameter must obey, its kind of value, and how to fix a
#: breach; a per-layer name (``dense_units3``) obeys its shared name's rule.
RULES: dict[str, tuple[Callable[[Any], str | None], str, str]] = {
    "n_layers": (_rule_layers, "number", "use a layer count such as 2"),
    "dense_units": (_rule_bounded("dense_units"), "number", "use a unit count such as 64"),
    "dropout_rate": (_rule_dropout, "number", "use a rate such as 0.2"),
    "activation": (_one_of(ACTIVATIONS), "string", f"use one of {', '.join(ACTIVATIONS)}"),
    "batch_norm": (_rule_bool, "bool", "use true or false"),
    "l2": (_rule_non_negative, "number", "use a factor such as 1e-4"),
    "optimizer": (_one_of(OPTIMIZERS), "string", f"use one of {', '.join(OPTIMIZERS)}"),
    "learning_rate": (_rule_learning_rate, "number", "use a rate such as 1e-3"),
    "weight_decay": (_rule_non_negative, "number", "use a factor such as 0.004"),
    "epochs": (_rule_bounded("epochs"), "number", "use an epoch count such as 10"),
    "batch_size": (_rule_bounded("batch_size"), "number", "use a batch size such as 32"),
}


def _show(value: object) -> str:
    """``repr`` of ``value``, shortened for integers with hundreds of digits."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _too_large(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT


def _number(where: str, value: object, *, integer: bool = False) -> float:
    """Check that ``value`` is a finite number (an integer if asked) and return it."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpaceError(f"{where} must be {kind}, got {short_value(value)}")
    if integer and not isinstance(value, int):
        raise SpaceError(f"{where} must be {kind}, got {short_value(value)}")
    if _too_large(value):
        raise SpaceError(f"{where} must be at most 2**53 in magnitude, got {_show(value)}")
    if not math.isfinite(value):
        raise SpaceError(f"{where} must be finite, got {short_value(value)}")
    return value


@dataclass(frozen=True)
class Choice:
    """One of a list of values, each equally likely."""

    values: tuple[Scalar, ...]
    kind: ClassVar[str] = "choice"

    def __post_init__(self) -> None:
        if not isinstance(self.values, tuple):
            raise SpaceError(f"choice values must be a list, got {short_value(self.values)}")
        if not self.values:
            raise SpaceError("choice values must not be empty; list at least one value")
        for v in self.values:
            if not isinstance(v, int | float | str):  # bool is an int
                raise SpaceError(
                    f"choice values must be numbers, strings or booleans, got {short_value(v)}"
                )

    def bounds(self) -> tuple[Scalar, ...]:
        return self.values

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "values": list(self.values)}


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high]."""

    low: float
    high: float
    kind: ClassVar[str] = "uniform"

    def __post_init__(self) -> None:
        _number("low", self.low)
        _number("high", self.high)
        if self.low > self.high:
            raise SpaceError(
                f"low must be <= high, got low={short_value(self.low)} "
                f"high={short_value(self.high)}; swap them"
            )

    def bounds(self) -> tuple[Scalar, ...]:
        return (self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class LogUniform(Uniform):
    """A float whose logarithm is uniform in [log low, log high]; low must be > 0."""

    kind: ClassVar[str] = "loguniform"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low <= 0:
            raise SpaceError(
                f"low must be > 0 on a log scale, got {short_value(self.low)}; use e.g. 1e-4"
            )


@dataclass(frozen=True)
class IntRange:
    """An integer in [low, high] on a grid of ``step``, uniform or log-uniform."""

    low: int
    high: int
    step: int = 1
    log: bool = False
    kind: ClassVar[str] = "int"

    def __post_init__(self) -> None:
        _number("low", self.low, integer=True)
        _number("high", self.high, integer=True)
        _number("step", self.step, integer=True)
        if not isinstance(self.log, bool):
            raise SpaceError(f"log must be true or false, got {short_value(self.log)}")
        if self.low > self.high:
            raise SpaceError(
                f"low must be <= high, got low={short_value(self.low)} "
                f"high={short_value(self.high)}; swap them"
            )
        if self.step < 1:
            raise SpaceError(f"step must be >= 1, got {short_value(self.step)}")
        if self.log and self.low < 1:
            raise SpaceError(f"low must be >= 1 on a log scale, got {short_value(self.low)}")
        if self.log and self.step != 1:
            raise SpaceError("step must be 1 when log is true; drop step or log")

    def bounds(self) -> tuple[Scalar, ...]:
        return (self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "low": self.low,
            "high": self.high,
            "step": self.step,
            "log": self.log,
        }


@dataclass(frozen=True)
class Fixed:
    """A constant: the parameter is set, not searched."""

    value: Scalar
    kind: ClassVar[str] = "fixed"

    def __post_init__(self) -> None:
        if not isinstance(self.value, int | float | str):  # bool is an int
            raise SpaceError(
                f"value must be a number, a string or a boolean, got {short_value(self.value)}"
            )

    def bounds(self) -> tuple[Scalar, ...]:
        return (self.value,)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "value": self.value}


Distribution = Choice | Uniform | LogUniform | IntRange | Fixed
_KINDS: dict[str, type[Distribution]] = {
    c.kind: c for c in (Choice, Uniform, LogUniform, IntRange, Fixed)
}
_FIELDS: dict[str, tuple[str, ...]] = {
    "choice": ("values",),
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "int": ("low", "high", "step", "log"),
    "fixed": ("value",),
}


@dataclass(frozen=True)
class SearchSpace:
    """A validated mapping from parameter name to distribution."""

    params: Mapping[str, Distribution] = field(default_factory=dict)
    #: The space of a user's build function (``--model``): any parameter name goes, the
    #: rules hold for the names seqsweep knows (learning_rate, epochs, ...).
    custom: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.custom:
            self._check_custom()
            return
        unknown = sorted(set(self.params) - set(ALLOWED_PARAMS))
        if unknown:
            raise SpaceError(
                f"unknown parameter {short_value(unknown[0])}; allowed: {ALLOWED_TEXT}"
            )
        for name, dist in self.params.items():
            _check_param(name, dist)
        _check_structure(self.params)
        # Freeze the mapping's order so equality and JSON are stable.
        object.__setattr__(
            self, "params", {k: self.params[k] for k in ALLOWED_PARAMS if k in self.params}
        )

    def _check_custom(self) -> None:
        for name, dist in self.params.items():
            if not (isinstance(name, str) and _NAME.match(name)):
                raise SpaceError(f"parameter name {name!r} must be a Python identifier, e.g. width")
            if name in RULES or name in _LAYER_SHARED:
                _check_param(name, dist)
        known = [n for n in ALLOWED_PARAMS if n in self.params]
        order = known + sorted(set(self.params) - set(known))
        object.__setattr__(self, "params", {k: self.params[k] for k in order})

    def to_dict(self) -> dict[str, Any]:
        """Return the space as JSON-ready data; :meth:`from_dict` reads it back."""
        return {name: dist.to_dict() for name, dist in self.params.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: object, where: str = "space", custom: bool = False) -> SearchSpace:
        """Build a space from parsed YAML/JSON; errors name ``where`` and the parameter.

        ``custom``: the space of a user's build function, with names of its own.
        """
        if not isinstance(data, Mapping):
            raise SpaceError(
                f"{where}: must be a mapping of parameter names to distributions, "
                f"got {type(data).__name__}"
            )
        params: dict[str, Distribution] = {}
        for name, spec in data.items():
            if name not in ALLOWED_PARAMS and not custom:
                raise SpaceError(
                    f"{where}: unknown parameter {short_value(name)}; allowed: {ALLOWED_TEXT}"
                )
            try:
                params[name] = _parse_distribution(spec)
            except SpaceError as exc:
                raise SpaceError(f"{where}: {name}: {exc}") from None
        try:
            return cls(params, custom=custom)
        except SpaceError as exc:
            raise SpaceError(f"{where}: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> SearchSpace:
        return cls.from_dict(json.loads(text))


def _parse_distribution(spec: object) -> Distribution:
    if not isinstance(spec, Mapping):
        if isinstance(spec, list):
            raise SpaceError(f"a list needs a type; write {{type: choice, values: {spec}}}")
        return Fixed(spec)  # type: ignore[arg-type]  # Fixed validates the type
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise SpaceError(
            f"type must be one of {', '.join(_KINDS)}, got {short_value(kind)}; "
            "e.g. {type: uniform, low: 0.0, high: 0.5}"
        )
    allowed = _FIELDS[kind]
    unknown = sorted(set(spec) - {"type", *allowed})
    if unknown:
        raise SpaceError(
            f"unknown key {short_value(unknown[0])} for type {kind}; allowed: {', '.join(allowed)}"
        )
    required = [f for f in allowed if f not in ("step", "log")]
    absent = [f for f in required if f not in spec]
    if absent:
        raise SpaceError(
            f"type {kind} needs {', '.join(required)}; {short_value(absent[0])} is missing"
        )
    kwargs = {k: spec[k] for k in allowed if k in spec}
    if kind == "choice":
        values = kwargs["values"]
        if not isinstance(values, list):
            raise SpaceError(f"values must be a list, got {short_value(values)}")
        kwargs["values"] = tuple(values)
    return _KINDS[kind](**kwargs)


def _check_param(name: str, dist: Distribution) -> None:
    """Check that every value ``dist`` can produce obeys the parameter's rule."""
    rule, kind, fix = RULES[_LAYER_SHARED.get(name, name)]
    integer = name in INT_PARAMS
    if kind != "number" and not isinstance(dist, Choice | Fixed):
        raise SpaceError(f"{name} takes a choice or a fixed value; {fix}")
    if integer and isinstance(dist, Uniform):
        raise SpaceError(
            f"{name} must be an integer; use {{type: int, ...}} or {{type: choice, ...}}"
        )
    for value in dist.bounds():
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpaceError(f"{name} must be a number, got {short_value(value)}; {fix}")
            if integer and not isinstance(value, int):
                raise SpaceError(f"{name} must be an integer, got {short_value(value)}; {fix}")
            if _too_large(value):
                raise SpaceError(
                    f"{name} must be at most 2**53 in magnitude, got {_show(value)}; {fix}"
                )
        problem = rule(value)
        if problem:
            raise SpaceError(f"{name} {problem}, got {short_value(value)}; {fix}")


def _check_structure(params: Mapping[str, Distribution]) -> None:
    """Check that the parameters describe one network, whatever a trial draws.

    Every hidden layer up to the largest ``n_layers`` needs its units; a per-layer
    name may neither sit beside its shared name nor exceed the largest ``n_layers``;
    ``weight_decay`` needs ``adamw`` among the optimizers.
    """
    n_layers = params.get("n_layers", Fixed(DEFAULTS["n_layers"]))
    most = int(max(n_layers.bounds()))  # type: ignore[type-var]
    high = "n_layers' high" if "n_layers" in params else "n_layers (2 unless the space sets it)"
    for shared in LAYER_PARAMS:
        own = [layer_name(shared, i) for i in range(1, MAX_LAYERS + 1)]
        present = [n for n in own if n in params]
        if shared in params and present:
            raise SpaceError(
                f"{present[0]} and {shared} both set layer {present[0][len(shared) :]}'s "
                f"{shared}; keep {shared} for every layer, or per-layer names only"
            )
        beyond = [n for n in present if int(n[len(shared) :]) > most]
        if beyond:
            raise SpaceError(
                f"{beyond[0]} is never used: {high} is {most}; remove it or raise n_layers"
            )
        if shared == "dense_units" and shared not in params:
            absent = [n for n in own[:most] if n not in params]
            if absent:
                raise SpaceError(
                    f"missing parameter {absent[0]!r}; every hidden layer needs units: "
                    f"set dense_units for all, or dense_units1 ... dense_units{most}"
                )
    if "learning_rate" not in params:
        raise SpaceError(
            "missing parameter 'learning_rate'; the optimizer needs it (a plain value fixes it)"
        )
    optimizers = params.get("optimizer", Fixed(DEFAULTS["optimizer"])).bounds()
    if "weight_decay" in params and "adamw" not in optimizers:
        raise SpaceError(
            "weight_decay is never used: it applies to optimizer adamw only; "
            "remove it or add adamw to optimizer"
        )


def default_space() -> SearchSpace:
    """Return the search space of the source article."""
    return SearchSpace(
        {
            "dense_units": Choice((32, 64, 128, 256, 512)),
            "dropout_rate1": Uniform(0.0, 0.5),
            "dropout_rate2": Uniform(0.0, 0.5),
            "learning_rate": LogUniform(1e-4, 1e-2),
        }
    )


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float, as YAML 1.2 and JSON do, and refuses
    what a space file never needs and an attacker would use: anchors and aliases (a
    few hundred bytes of them expand to gigabytes) and duplicate keys (the last one
    would silently win)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (& and *) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, Hashable) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {short_value(key)}", key_node.start_mark
                    )
                if isinstance(key, Hashable):
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object with each key once: a repeated key would silently win."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {short_value(key)}")
        found[key] = value
    return found


def load_space_file(path: str | Path, custom: bool = False) -> SearchSpace:
    """Load and validate a YAML or JSON space file."""
    path = Path(path)
    where = f"space file {path}"
    try:
        text = read_input(path, "--space", MAX_SPACE_FILE_BYTES, where).decode("utf-8")
    except UsageError as exc:
        raise SpaceError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise SpaceError(f"{where}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_json_object)
        else:
            data = yaml.load(text, Loader=_YamlLoader)  # SafeLoader subclass: no objects
    except (ValueError, yaml.YAMLError) as exc:
        # ValueError: JSON syntax, and integers past Python's digit limit in JSON or YAML
        detail = " ".join(str(exc).split())
        raise SpaceError(f"{where}: not valid YAML/JSON ({detail})") from None
    except RecursionError:
        raise SpaceError(
            f"{where}: nested too deeply to be a search space; see README, Space files"
        ) from None
    return SearchSpace.from_dict(data, where=where, custom=custom)
