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
