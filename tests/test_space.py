"""The search space validates itself on construction and round-trips through JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.space import (
    Choice,
    Fixed,
    IntRange,
    LogUniform,
    SearchSpace,
    Uniform,
    default_space,
    load_space_file,
)
from seqsweep.errors import SpaceError, UsageError

VALID = {
    "dense_units": {"type": "choice", "values": [16, 32]},
    "dropout_rate1": {"type": "uniform", "low": 0.0, "high": 0.3},
    "dropout_rate2": 0.1,
    "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
    "epochs": {"type": "int", "low": 1, "high": 3},
}


def test_default_space_is_the_articles() -> None:
    space = default_space()
    assert space.params["dense_units"] == Choice((32, 64, 128, 256, 512))
    assert space.params["dropout_rate1"] == Uniform(0.0, 0.5)
    assert space.params["dropout_rate2"] == Uniform(0.0, 0.5)
    assert space.params["learning_rate"] == LogUniform(1e-4, 1e-2)


@pytest.mark.parametrize("space", [default_space(), SearchSpace.from_dict(VALID)])
def test_round_trips_through_json(space: SearchSpace) -> None:
    again = SearchSpace.from_json(space.to_json())
    assert again == space
    assert json.loads(again.to_json()) == json.loads(space.to_json())


def test_plain_value_is_fixed() -> None:
    assert SearchSpace.from_dict(VALID).params["dropout_rate2"] == Fixed(0.1)


def test_distributions_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Uniform(0.0, 0.5).low = 0.2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"units": 3}, "unknown parameter 'units'"),
        ({"dropout_rate1": {"type": "uniform", "low": 0.4, "high": 0.1}}, "low must be <= high"),
        ({"dropout_rate1": {"type": "uniform", "low": 0.0, "high": 1.0}}, "must be in [0, 1)"),
        ({"dropout_rate2": -0.1}, "dropout_rate2 must be in [0, 1), got -0.1"),
        ({"learning_rate": {"type": "uniform", "low": 0.0, "high": 0.1}}, "must be > 0"),
        ({"learning_rate": {"type": "loguniform", "low": -1, "high": 0.1}}, "must be > 0"),
        (
            {"dense_units": {"type": "choice", "values": [0, 8]}},
            "dense_units must be in [1, 65536]",
        ),
        ({"dense_units": {"type": "choice", "values": []}}, "must not be empty"),
        ({"dense_units": {"type": "choice", "values": [8.5]}}, "must be an integer"),
        ({"dense_units": {"type": "uniform", "low": 8, "high": 16}}, "must be an integer"),
        ({"dense_units": "many"}, "must be a number, got 'many'"),
        ({"dropout_rate1": {"type": "uniform", "low": "a", "high": 0.2}}, "must be a number"),
        ({"dropout_rate1": {"type": "gaussian"}}, "type must be one of"),
        ({"dropout_rate1": {"type": "uniform", "low": 0.1}}, "'high' is missing"),
        (
            {"dropout_rate1": {"type": "uniform", "low": 0.1, "high": 0.2, "mu": 1}},
            "unknown key 'mu'",
        ),
        (
            {"batch_size": {"type": "int", "low": 0, "high": 8}},
            "batch_size must be in [1, 1000000]",
        ),
        ({"epochs": True}, "must be a number"),
    ],
)
def test_invalid_space_names_parameter_and_rule(change: dict, fragment: str) -> None:
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_dict({**VALID, **change}, where="space file s.yaml")
    message = str(err.value)
    assert fragment in message
    assert message.startswith("space file s.yaml:")
    assert "\n" not in message


def test_missing_model_parameter() -> None:
    data = dict(VALID)
    del data["learning_rate"]
    with pytest.raises(SpaceError, match="missing parameter 'learning_rate'"):
        SearchSpace.from_dict(data)


def test_space_errors_are_usage_errors() -> None:
    assert issubclass(SpaceError, UsageError)
    assert SpaceError.exit_code == 2


def test_int_range_rules() -> None:
    with pytest.raises(SpaceError, match="step must be >= 1"):
        IntRange(1, 5, step=0)
    with pytest.raises(SpaceError, match="low must be >= 1 on a log scale"):
        IntRange(0, 5, log=True)


def test_yaml_file_reads_exponents_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(
        "dense_units: {type: choice, values: [8, 16]}\n"
        "dropout_rate1: {type: uniform, low: 0.0, high: 0.5}\n"
        "dropout_rate2: 0.25\n"
        "learning_rate: {type: loguniform, low: 1e-4, high: 1e-2}\n"
    )
    space = load_space_file(path)
    assert space.params["learning_rate"] == LogUniform(1e-4, 1e-2)


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(VALID))
    assert load_space_file(path) == SearchSpace.from_dict(VALID)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("dense_units: [1, 2\n", "not valid YAML/JSON"), ("- 1\n- 2\n", "must be a mapping")],
)
def test_bad_space_file(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(content)
    with pytest.raises(SpaceError, match=fragment):
        load_space_file(path)


def test_missing_space_file(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="not found; check the path given to --space"):
        load_space_file(tmp_path / "nope.yaml")


# -- structure parameters -----------------------------------------------------------

DEEP_YAML = """\
n_layers: {type: int, low: 1, high: 3}
dense_units1: {type: choice, values: [64, 128]}
dense_units2: 32
dense_units3: 16
dropout_rate: {type: uniform, low: 0.0, high: 0.3}
activation: {type: choice, values: [relu, gelu]}
batch_norm: {type: choice, values: [true, false]}
optimizer: {type: choice, values: [adam, adamw, sgd]}
weight_decay: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
"""
ARTICLE = {"dense_units": 32, "learning_rate": 1e-3}


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        (
            {**ARTICLE, "dense_units": 8, "n_layers": {"type": "int", "low": 1, "high": 3},
             "dropout_rate5": 0.1},
            "dropout_rate5 is never used: n_layers' high is 3; remove it or raise n_layers",
        ),
        (
            {"learning_rate": 1e-3, "n_layers": 3, "dense_units1": 8,
             "dense_units2": 8, "dense_units3": 8, "dense_units5": 8},
            "dense_units5 is never used",
        ),
        ({**ARTICLE, "activation1": "gelu", "activation": "relu"},
         "activation1 and activation both"),
        ({**ARTICLE, "activation": "swish"}, "activation must be one of relu, gelu"),
        ({**ARTICLE, "optimizer": {"type": "choice", "values": ["sgd", "lion"]}},
         "optimizer must be one of adam, adamw, sgd, rmsprop, got 'lion'"),
        ({**ARTICLE, "dense_units9": 8}, "unknown parameter 'dense_units9'"),
        ({"learning_rate": 1e-3, "n_layers": 3, "dense_units1": 8},
         "missing parameter 'dense_units2'"),
        ({**ARTICLE, "n_layers": 9}, "n_layers must be in [1, 8], got 9"),
        ({**ARTICLE, "batch_norm": "yes"}, "batch_norm must be true or false"),
        ({**ARTICLE, "weight_decay": 0.01}, "weight_decay is never used"),
        ({**ARTICLE, "l2": -1e-4}, "l2 must be >= 0"),
        ({**ARTICLE, "activation": {"type": "uniform", "low": 0, "high": 1}}, "takes a choice"),
    ],
)  # fmt: skip
def test_invalid_structure_is_one_line(space: dict, fragment: str) -> None:
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_dict(space, where="space file deep.yaml")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_structure_space_round_trips_and_conditional_params_are_absent(tmp_path: Path) -> None:
    from scheduler.sampling import sample

    path = tmp_path / "deep.yaml"
    path.write_text(DEEP_YAML)
    space = load_space_file(path)
    assert space.params["batch_norm"] == Choice((True, False))
    assert SearchSpace.from_json(space.to_json()) == space
    trials = [sample(space, 7, n) for n in range(40)]
    assert {t["n_layers"] for t in trials} == {1, 2, 3}
    for t in trials:
        for i in range(1, 4):
            assert (f"dense_units{i}" in t) == (i <= t["n_layers"]), t
        assert ("weight_decay" in t) == (t["optimizer"] == "adamw"), t
        assert None not in t.values()
    # A conditional parameter is drawn from its own stream: dropping it moves nothing else.
    kept = {k: v for k, v in space.to_dict().items() if k not in ("dense_units2", "dense_units3")}
    shallow = SearchSpace.from_dict({**kept, "n_layers": 1})
    for n in range(10):
        one = sample(shallow, 7, n)
        assert one["dense_units1"] == trials[n]["dense_units1"]
        assert one["learning_rate"] == trials[n]["learning_rate"]
