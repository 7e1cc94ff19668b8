"""Fuzzing the inputs users bring: every search-space file and every CSV either
gives one clean error line (exit code 2, nothing written) or a valid study.

The real CLI runs in-process (``scheduler.cli.main``) with ``--detach``, so each
example validates, writes the study and enqueues its trials on an embedded
broker, but trains nothing. Anything else (a traceback, another exit code, a
partial study) is a bug; examples that found one are kept as ``@example``.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from scheduler.cli import main
from seqsweep.db import ResultStore

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MODEL_PARAMS = ["dense_units", "dropout_rate1", "dropout_rate2", "learning_rate"]
ALL_PARAMS = [*MODEL_PARAMS, "epochs", "batch_size"]


@dataclass(frozen=True)
class Env:
    home: Path
    db_url: str
    broker_url: str
    store: ResultStore


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    home = tmp_path_factory.mktemp("fuzz")
    db_url = f"sqlite:///{home / 'r.db'}"
    return Env(home, db_url, f"sqla+sqlite:///{home / 'b.db'}", ResultStore(db_url))


def _run(env: Env, *flags: str) -> tuple[str, int, str, str]:
    """Run ``launch --detach`` in-process; return (study name, exit code, stdout, stderr)."""
    study = f"fz-{uuid.uuid4().hex[:12]}"
    argv = [
        "launch",
        "--detach",
        "--local-workers",
        "0",
        "--trials",
        "2",
        "--study",
        study,
        "--db",
        env.db_url,
        "--broker",
        env.broker_url,
        *flags,
    ]
    out, err = io.StringIO(), io.StringIO()
    # launch installs SIGTERM/SIGHUP handlers for its local workers: keep pytest's own.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse errors
                code = exc.code  # type: ignore[assignment]
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return study, code, out.getvalue(), err.getvalue()


def _check(env: Env, study: str, code: int, out: str, err: str, where: tuple[str, ...]) -> None:
    """Either a valid study with 2 queued trials, or one clean error line and no study."""
    assert "Traceback" not in out + err, out + err
    event(f"exit code {code}")
    record = env.store.get_study(study)
    if code == 0:
        assert "error" not in err, err
        assert record is not None, out
        counts = env.store.counts(record.id)
        assert (counts.total, counts.queued) == (2, 2), counts
        assert f"detached: study {study} has 2 queued trials" in out
        return
    assert code == 2, f"exit code {code}: {out}{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(("error: ", "python -m scheduler")), lines[0]
    assert lines[0].startswith("error: ") or ": error: " in lines[0], lines[0]
    assert any(w in lines[0] for w in where), lines[0]  # says where the problem is
    assert out == ""
    assert record is None, f"partial study {study} left after: {lines[0]}"


# -- search-space files -------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_number = st.one_of(
    st.integers(-5, 600),
    st.floats(-2, 2),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [0, 1, 1e-4, 1e-2, 0.5, 0.999, 1.0, -1e-3, 2**53 + 1, 2**64, 10**40, -(10**40), 1e308]
    ),
)
_junk = st.one_of(st.none(), st.booleans(), _number, _text, st.lists(_number, max_size=3))
_bounds = {"low": _number, "high": _number}


def _dist(value: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Any distribution spec, valid or not, drawing numbers from ``value``."""
    return st.one_of(
        value,  # a plain value: fixed
        st.fixed_dictionaries({"type": st.just("choice"), "values": st.lists(value, max_size=4)}),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["uniform", "loguniform"]), "low": value, "high": value}
        ),
        st.fixed_dictionaries(
            {"type": st.just("int"), "low": value, "high": value},
            optional={"step": value, "log": st.one_of(st.booleans(), _junk)},
        ),
        st.fixed_dictionaries({"type": st.just("fixed"), "value": value}),
        st.fixed_dictionaries(  # wrong type names, unknown and missing keys
            {"type": st.one_of(_junk, st.sampled_from(["Choice", "normal", ""]))},
            optional={"values": _junk, "low": value, "high": value, "bogus": _junk},
        ),
        st.dictionaries(_text, _junk, max_size=3),
        st.lists(value, max_size=3),  # a list without a type
    )


_VALID = {
    "dense_units": st.one_of(
        st.integers(1, 512),
        st.fixed_dictionaries(
            {"type": st.just("choice"), "values": st.lists(st.integers(1, 512), min_size=1)}
        ),
        st.tuples(st.integers(1, 64), st.integers(64, 512)).map(
            lambda b: {"type": "int", "low": b[0], "high": b[1]}
        ),
    ),
    "dropout_rate1": st.tuples(st.floats(0, 0.99), st.floats(0, 0.99)).map(
        lambda b: {"type": "uniform", "low": min(b), "high": max(b)}
    ),
    "dropout_rate2": st.one_of(st.floats(0, 0.99), st.just({"type": "fixed", "value": 0.0})),
    "learning_rate": st.tuples(st.floats(1e-6, 1.0), st.floats(1e-6, 1.0)).map(
        lambda b: {"type": "loguniform", "low": min(b), "high": max(b)}
    ),
}


@st.composite
def _spaces(draw: st.DrawFn) -> object:
    """A mapping near the valid shape (some valid, some with one or more bad entries),
    an arbitrary mapping, or a top level that is not a mapping at all."""
    kind = draw(st.sampled_from(["valid", "mutated", "random", "not-a-mapping"]))
    if kind == "not-a-mapping":
        return draw(_junk)
    if kind == "random":
        names = st.one_of(st.sampled_from([*ALL_PARAMS, "units", "Dense_units", ""]), _text)
        return draw(st.dictionaries(names, _dist(_number), max_size=7))
    space = {name: draw(_VALID[name]) for name in MODEL_PARAMS}
    if draw(st.booleans()):
        space["epochs"] = {"type": "int", "low": 1, "high": draw(st.integers(1, 5))}
    if kind == "mutated":
        for name in draw(st.lists(st.sampled_from(ALL_PARAMS), min_size=1, max_size=2)):
            space[name] = draw(_dist(_number))
        if draw(st.booleans()):
            space[draw(st.sampled_from(["units", "momentum", "Epochs"]))] = 1
        if draw(st.booleans()):
            del space[draw(st.sampled_from(MODEL_PARAMS))]
    return space


@st.composite
def _space_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file suffix, content): JSON or YAML renderings, truncations, and garbage."""
    form = draw(st.sampled_from(["json", "yaml", "truncated", "text", "bytes"]))
    suffix = draw(st.sampled_from([".json", ".yaml", ".yml"]))
    if form == "bytes":
        return suffix, draw(st.binary(max_size=64))
    if form == "text":
        return suffix, draw(st.text(st.characters(blacklist_categories=("Cs",)))).encode()
    space = draw(_spaces())
    if form == "json":
        suffix = ".json"
    elif form == "yaml" and suffix == ".json":
        suffix = ".yaml"
    # json writes NaN and Infinity, as Python's json reads them; YAML writes .nan and .inf
    text = json.dumps(space) if suffix == ".json" else yaml.safe_dump(space)
    if form == "truncated":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    return suffix, text.encode()


VALID_YAML = (
    b"dense_units: {type: choice, values: [8, 16]}\n"
    b"dropout_rate1: {type: uniform, low: 0.0, high: 0.3}\n"
    b"dropout_rate2: 0.1\n"
    b"learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n"
)


@FUZZ
@given(_space_files())
@example((".yaml", VALID_YAML))  # a valid study
@example((".json", json.dumps(yaml.safe_load(VALID_YAML)).encode()))
@example((".yaml", b"- 1\n- 2\n"))  # top level not a mapping
@example((".json", b"[[[[" * 20_000))  # nesting deeper than the parser's recursion limit
@example((".yaml", b"[[[[" * 20_000))
@example((".json", b'{"dense_units": 1' + b"0" * 5000 + b"}"))  # past int-to-str limit
@example((".yaml", b"dense_units: 1" + b"0" * 5000 + b"\n"))
@example((".yaml", b"dense_units: {type: [choice], values: [1]}\n"))  # unhashable type
@example((".yaml", VALID_YAML.replace(b"0.1\n", b"1" + b"0" * 400 + b"\n")))  # huge int
@example((".yaml", VALID_YAML.replace(b"[8, 16]", b"[8, 1" + b"0" * 30 + b"]")))
@example(
    (
        ".yaml",
        VALID_YAML.replace(
            b"{type: choice, values: [8, 16]}", b"{type: int, low: 1, high: 1" + b"0" * 30 + b"}"
        ),
    )
)
def test_space_file_gives_a_study_or_one_clean_error(env: Env, case: tuple[str, bytes]) -> None:
    suffix, content = case
    path = env.home / f"space-{uuid.uuid4().hex[:8]}{suffix}"
    path.write_bytes(content)
    study, code, out, err = _run(env, "--space", str(path))
    _check(env, study, code, out, err, where=(f"space file {path}",))


# -- CSV data files -----------------------------------------------------------

_cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(
        ["", " ", "nan", "NaN", "NA", "inf", "-inf", "1e400", "True", "abc", "é", "😀", '"', "1,5"]
    ),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=6),
)
_column = st.one_of(st.sampled_from(["a", "b", "f0", "label", "", '"q"', "é", "a b"]), _text)


@st.composite
def _csv_files(draw: st.DrawFn) -> tuple[bytes, str]:
    """(content, --target): numeric tables near the valid shape, chaos, and garbage."""
    form = draw(st.sampled_from(["numeric", "numeric", "chaos", "empty", "bytes"]))
    if form == "empty":
        return b"", "label"
    if form == "bytes":
        return draw(st.binary(max_size=80)), "label"
    if form == "numeric":
        n_features = draw(st.integers(1, 3))
        header = [f"f{i}" for i in range(n_features)] + ["label"]
        labels = draw(
            st.lists(
                st.one_of(st.integers(0, 3).map(str), st.sampled_from(["yes", "no", "é", "😀"])),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        rows = draw(
            st.lists(
                st.tuples(
                    st.lists(st.floats(-1e6, 1e6), min_size=n_features, max_size=n_features),
                    st.sampled_from(labels),
                ),
                min_size=draw(st.sampled_from([0, 10])),
                max_size=30,
            )
        )
        lines = [",".join([*(repr(v) for v in x), json.dumps(lab)]) for x, lab in rows]
        # a few cells replaced by anything: empty, NaN, text, ragged rows
        for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines[i] = draw(st.sampled_from([lines[i] + ",", ""])) + draw(_cell)
    else:
        header = draw(st.lists(_column, max_size=5))
        lines = [",".join(row) for row in draw(st.lists(st.lists(_cell, max_size=6), max_size=12))]
    target = draw(st.one_of(st.sampled_from(header or ["label"]), st.just("missing")))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join([",".join(header), *lines]).encode(), target


TINY = "f0,f1,label\n" + "".join(f"{i},{i % 3},{'yn'[i % 2]}\n" for i in range(12))


@FUZZ
@given(_csv_files())
@example((TINY.encode(), "label"))  # a valid study
@example((TINY.encode(), "nope"))  # missing target
@example((b"f0,label\n", "label"))  # a header and no rows
@example((b'"x\n0.0",f\n1,2\n', "label"))  # a column name with a line break, in the error
@example((b"a,label\n1,x,9\n2,y,8\n3,x,7\n", "label"))  # ragged: pandas takes column 0 as index
@example((("\ufeffa,label\n" + "".join(f"{i},é{i % 2}\n" for i in range(12))).encode(), "label"))
def test_csv_gives_a_study_or_one_clean_error(env: Env, case: tuple[bytes, str]) -> None:
    content, target = case
    path = env.home / f"data-{uuid.uuid4().hex[:8]}.csv"
    path.write_bytes(content)
    study, code, out, err = _run(env, "--data", str(path), "--target", target)
    _check(env, study, code, out, err, where=(f"data file {path}", "dataset: "))
