"""Fuzzing the inputs users bring: every search-space file, CSV and NPZ file, special
file and numeric flag either gives one clean error line (exit code 2, no study, no new
file) or a valid study.

The real CLI runs in-process (``scheduler.cli.main``) with ``--detach``, so each
example validates, writes the study and enqueues its trials on an embedded
broker, but trains nothing. Anything else (a traceback, another exit code, a
partial study, a hang) is a bug; examples that found one are kept as ``@example``.

Each example runs under a SIGALRM timeout, so a hang (a FIFO read, say) fails it
instead of stalling CI. The seed is fixed under CI (``$SEQSWEEP_FUZZ_SEED`` picks
another) and printed with every failure, so a red CI run can be replayed exactly.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, note, seed, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from scheduler.cli import main
from seqsweep.db import ResultStore

_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FUZZ_SEED = int(
    os.environ.get("SEQSWEEP_FUZZ_SEED") or (20261129 if _CI else random.randrange(2**32))
)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
#: Seconds one example may take: validation and a 2-trial --detach study take well under 2.
EXAMPLE_TIMEOUT_S = 20


class ExampleTimeout(Exception):
    """An example ran past EXAMPLE_TIMEOUT_S: the CLI hung on this input."""


def _replay_note() -> None:
    note(f"Hypothesis seed {FUZZ_SEED}: replay with SEQSWEEP_FUZZ_SEED={FUZZ_SEED}")


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
    before = set(env.home.iterdir())

    def hung(_signum: int, _frame: object) -> None:
        raise ExampleTimeout(f"launch {' '.join(flags)[:200]} ran past {EXAMPLE_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(EXAMPLE_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse errors
                code = exc.code  # type: ignore[assignment]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    if code != 0:  # a refused launch creates no file at all (results DB, broker, log)
        new = sorted(p.name for p in set(env.home.iterdir()) - before)
        assert new == [], f"refused, yet it wrote {new}: {err.getvalue()}"
    return study, code, out.getvalue(), err.getvalue()


def _check(env: Env, study: str, code: int, out: str, err: str, where: tuple[str, ...]) -> None:
    """Either a valid study with 2 queued trials, or one clean error line and no study."""
    assert "Traceback" not in out + err, out + err
    if currently_in_test_context():  # not in the plain parametrized tests
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
    assert lines[0].startswith(("error: ", "seqsweep", "python -m scheduler")), lines[0]
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


@seed(FUZZ_SEED)
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
    _replay_note()
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


@seed(FUZZ_SEED)
@FUZZ
@given(_csv_files())
@example((TINY.encode(), "label"))  # a valid study
@example((TINY.encode(), "nope"))  # missing target
@example((b"f0,label\n", "label"))  # a header and no rows
@example((b'"x\n0.0",f\n1,2\n', "label"))  # a column name with a line break, in the error
@example((b"a,label\n1,x,9\n2,y,8\n3,x,7\n", "label"))  # ragged: pandas takes column 0 as index
@example((("\ufeffa,label\n" + "".join(f"{i},é{i % 2}\n" for i in range(12))).encode(), "label"))
def test_csv_gives_a_study_or_one_clean_error(env: Env, case: tuple[bytes, str]) -> None:
    _replay_note()
    content, target = case
    path = env.home / f"data-{uuid.uuid4().hex[:8]}.csv"
    path.write_bytes(content)
    study, code, out, err = _run(env, "--data", str(path), "--target", target)
    _check(env, study, code, out, err, where=(f"data file {path}", "dataset: "))


# -- YAML anchors and aliases -----------------------------------------------------


@st.composite
def _aliased_yaml(draw: st.DrawFn) -> bytes:
    """A space file that uses anchors and aliases: plain reuse, or an expansion bomb."""
    if draw(st.booleans()):  # billion laughs, of any width and depth
        width, depth = draw(st.integers(2, 12)), draw(st.integers(1, 12))
        lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
        for i in range(1, depth + 1):
            lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
        return ("\n".join(lines) + "\n").encode()
    anchored = draw(st.sampled_from(MODEL_PARAMS))
    used = draw(st.sampled_from([*ALL_PARAMS, "bogus"]))
    lines = VALID_YAML.decode().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(anchored))
    name, _, value = lines[at].partition(": ")
    lines[at] = f"{name}: &x {value}"
    if draw(st.booleans()):
        lines.append(f"{used}: *x")
    return ("\n".join(lines) + "\n").encode()


@seed(FUZZ_SEED)
@settings(FUZZ, max_examples=30)
@given(_aliased_yaml())
@example(b"a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n".encode()
    for i in range(8)
))  # fmt: skip
def test_yaml_anchors_and_aliases_are_refused(env: Env, content: bytes) -> None:
    _replay_note()
    path = env.home / f"space-{uuid.uuid4().hex[:8]}.yaml"
    path.write_bytes(content)
    study, code, out, err = _run(env, "--space", str(path))
    _check(env, study, code, out, err, where=(f"space file {path}",))
    assert code == 2 and "anchors and aliases" in err, err


# -- NPZ data files ---------------------------------------------------------------

_DTYPES = ["float64", "float32", "int64", "int8", "uint8", "bool", "complex64", "U3", "S2"]


@st.composite
def _npz_files(draw: st.DrawFn) -> bytes:
    """An .npz near the valid shape (X rows x features, y labels), or not an .npz."""
    form = draw(st.sampled_from(["arrays", "arrays", "arrays", "npy", "zip", "bytes"]))
    if form == "bytes":
        return draw(st.binary(max_size=80))
    if form == "zip":  # a zip that holds something else, or a truncated .npz
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(draw(st.sampled_from(["X.npy", "y.npy", "notes.txt"])), draw(st.binary()))
        data = buf.getvalue()
        return data[: draw(st.integers(0, len(data)))]
    rows = draw(st.sampled_from([0, 1, 3, 12, 40]))
    shape = draw(
        st.sampled_from([(rows, 2), (rows, 0), (rows,), (rows, 2, 2), (rows, 1), (rows, 3)])
    )
    x = np.asarray(
        draw(
            st.lists(
                st.one_of(
                    st.floats(-3, 3),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([1e15, 1e16, 1e30, -1e30, 3.4e38, 1e308]),
                ),
                min_size=int(np.prod(shape)),
                max_size=int(np.prod(shape)),
            )
        )
    ).reshape(shape)
    dtype = draw(st.sampled_from(_DTYPES))
    with np.errstate(all="ignore"), contextlib.suppress(ValueError, OverflowError):
        x = x.astype(dtype)
    n_y = draw(st.sampled_from([rows, rows, rows + 1, max(rows - 1, 0)]))
    classes = draw(st.sampled_from([1, 2, 3, n_y or 1]))
    y = np.arange(n_y) % classes
    if draw(st.booleans()):
        y = y.astype(draw(st.sampled_from(["float64", "U4", "int64", "bool"])))
    arrays = {"X": x, "y": y}
    if draw(st.booleans()):
        del arrays[draw(st.sampled_from(["X", "y"]))]
    buf = io.BytesIO()
    if form == "npy":  # an .npy saved under an .npz name
        np.save(buf, x)
    else:
        np.savez(buf, **arrays)
    return buf.getvalue()


@seed(FUZZ_SEED)
@settings(FUZZ, max_examples=40)
@given(_npz_files())
@example(b"\x93NUMPY")  # the start of an .npy
def test_npz_gives_a_study_or_one_clean_error(env: Env, content: bytes) -> None:
    _replay_note()
    path = env.home / f"data-{uuid.uuid4().hex[:8]}.npz"
    path.write_bytes(content)
    study, code, out, err = _run(env, "--data", str(path))
    _check(env, study, code, out, err, where=(f"data file {path}", "dataset: "))


# -- special files ---------------------------------------------------------------


def _special(home: Path, kind: str, suffix: str) -> Path:
    path = home / f"special-{uuid.uuid4().hex[:8]}{suffix}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "link-to-fifo":
        target = home / f"fifo-{uuid.uuid4().hex[:8]}"
        os.mkfifo(target)
        path.symlink_to(target)
    else:  # a device that never ends, or is empty
        path.symlink_to(kind)
    return path


@pytest.mark.parametrize("kind", ["fifo", "folder", "link-to-fifo", "/dev/zero", "/dev/null"])
@pytest.mark.parametrize(
    ("flag", "suffix"), [("--space", ".yaml"), ("--data", ".csv"), ("--data", ".npz")]
)
def test_special_files_are_refused_without_hanging(
    env: Env, kind: str, flag: str, suffix: str
) -> None:
    path = _special(env.home, kind, suffix)
    extra = ["--target", "label"] if suffix == ".csv" else []
    study, code, out, err = _run(env, flag, str(path), *extra)
    what = "space file" if flag == "--space" else "data file"
    _check(env, study, code, out, err, where=(f"{what} {path}",))
    assert code == 2 and ("regular file" in err or "is a folder" in err), err


# -- huge and odd numbers in every numeric flag ------------------------------------

_INT_FLAGS = ["--trials", "--epochs", "--batch-size", "--pack-size", "--max-attempts",
              "--top", "--local-workers", "--seed"]  # fmt: skip
_FLOAT_FLAGS = ["--trial-timeout", "--val-fraction", "--test-fraction"]


@st.composite
def _numeric_flags(draw: st.DrawFn) -> list[str]:
    flag = draw(st.sampled_from(_INT_FLAGS + _FLOAT_FLAGS))
    if flag == "--trials":  # a valid large study would only test the broker's speed
        value = draw(st.one_of(st.integers(max_value=0), st.integers(min_value=100_001)))
        text = str(value)
    else:
        text = draw(
            st.one_of(
                st.integers().map(str),
                st.sampled_from([2**63, 2**63 + 1, 2**64, -(2**63) - 1, 10**30]).map(str),
                st.just("9" * 5000),  # past Python's int-to-str digit limit
                st.floats(allow_nan=True, allow_infinity=True).map(repr),
                st.sampled_from(["", " ", "1e400", "0x10", "1_000", "abc", "-0", "1.5"]),
            )
        )
    return [flag, text]


@seed(FUZZ_SEED)
@settings(FUZZ, max_examples=60)
@given(_numeric_flags())
@example(["--trials", "1000000000"])
@example(["--local-workers", "100000"])
@example(["--top", str(2**63 + 1)])
@example(["--epochs", "1" + "0" * 30])
@example(["--batch-size", str(2**63)])
def test_numeric_flags_give_a_study_or_one_clean_error(env: Env, flags: list[str]) -> None:
    _replay_note()
    study, code, out, err = _run(env, *flags)
    _check(env, study, code, out, err, where=(flags[0], flags[0].lstrip("-").replace("-", "_")))
