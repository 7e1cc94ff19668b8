"""Loading the user's data (CSV or NPZ) or the built-in synthetic set, with clear errors."""

from __future__ import annotations

import csv
import io
import warnings
import zipfile
from pathlib import Path

import numpy as np

from seqsweep.dataset import Dataset
from seqsweep.errors import DataError, UsageError
from seqsweep.files import read_input
from seqsweep.settings import MAX_DATA_FILE_BYTES, short_value

#: Beyond this a feature's square overflows float32 when the worker standardizes it.
MAX_FEATURE_MAGNITUDE = 1e15
#: A label column with more classes is an id or a continuous value, not a class label.
MAX_CLASSES = 1000

SYNTHETIC_ROWS = 4000
SYNTHETIC_FEATURES = 5
#: Fraction of labels flipped at random: it caps the best accuracy near 90%,
#: so a search has room to tell good settings from bad ones.
SYNTHETIC_LABEL_NOISE = 0.08


def synthetic_dataset(n_rows: int = SYNTHETIC_ROWS, seed: int = 20240521) -> Dataset:
    """Return the built-in binary classification set, shaped like the article's example.

    Five features, two classes, a non-linear boundary (a product, a sine and a
    square term) plus label noise: a linear model stays well below a small MLP,
    and nothing reaches 100%. Deterministic, so its content hash never changes.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, SYNTHETIC_FEATURES)).astype(np.float32)
    score = (
        1.5 * x[:, 0] * x[:, 1] + np.sin(2.0 * x[:, 2]) + 0.6 * x[:, 3] ** 2 - 0.5 * x[:, 4] - 0.6
    )
    y = (score > 0).astype(np.int64)
    flip = rng.random(n_rows) < SYNTHETIC_LABEL_NOISE
    y[flip] = 1 - y[flip]
    return Dataset(x, y, ("0", "1"))


#: ``--task auto`` takes a float target with more distinct values than this for regression.
AUTO_REGRESSION_VALUES = 20
TASKS = ("auto", "classification", "regression")


def load_dataset(path: str | Path | None, target: str | None, task: str = "auto") -> Dataset:
    """Load ``path`` (``.csv`` needs ``target``; ``.npz`` holds ``X`` and ``y``), or the default.

    ``task`` ``auto`` reads a float target with more than 20 distinct values as a
    regression target, anything else as class labels.
    """
    if task not in TASKS:
        raise DataError(f"--task {task}: must be one of {', '.join(TASKS)}")
    if path is None:
        if target is not None:
            raise DataError("--target is set but --data is not; pass --data FILE.csv too")
        if task == "regression":
            raise DataError(
                "--task regression: the built-in dataset is a classification one; "
                "pass --data FILE.csv --target COLUMN with a numeric target"
            )
        return synthetic_dataset()
    path = Path(path)
    where = f"data file {path}"
    if path.is_dir():
        raise DataError(f"{where}: is a folder; give a .csv or .npz file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".npz"):
        raise DataError(f"{where}: unsupported type {suffix or '(none)'!r}; use .csv or .npz")
    if suffix == ".csv" and target is None:
        raise DataError(f"{where}: a CSV needs --target COLUMN to name the label column")
    if suffix == ".npz" and target is not None:
        raise DataError(f"{where}: --target applies to CSV files; an .npz holds X and y")
    try:
        content = read_input(path, "--data", MAX_DATA_FILE_BYTES, where)
    except UsageError as exc:
        raise DataError(str(exc)) from None
    if suffix == ".csv":
        assert target is not None
        return _load_csv(content, target, where, task)
    return _load_npz(content, where, task)


def _load_csv(content: bytes, target: str, where: str, task: str) -> Dataset:
    import pandas as pd  # heavy; only CSV users pay for it

    _refuse_duplicate_columns(content, where)
    try:
        with warnings.catch_warnings():
            # index_col=False: a row with more fields than the header must not silently
            # become an index and shift every column; pandas warns about it instead.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.BytesIO(content), skipinitialspace=True, index_col=False)
    except pd.errors.ParserWarning:
        raise DataError(
            f"{where}: some rows have more fields than the header; "
            "give every row one value per header column"
        ) from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        detail = " ".join(str(exc).split())
        raise DataError(f"{where}: cannot be read as CSV ({detail})") from None
    if len(frame) == 0:
        raise DataError(f"{where}: no data rows below the header; add rows or fix the file")
    if target not in frame.columns:
        shown = ", ".join(repr(str(c)) for c in frame.columns[:10])  # repr: one line
        raise DataError(f"{where}: target column {target!r} not found; columns are: {shown}")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(f"{where}: no feature columns besides the target {target!r}")
    for column in features.columns:
        if not pd.api.types.is_numeric_dtype(features[column]) or pd.api.types.is_bool_dtype(
            features[column]
        ):
            rows = np.flatnonzero(
                pd.to_numeric(features[column], errors="coerce").isna() & features[column].notna()
            )
            example = (
                f" (e.g. {features[column].iloc[rows[0]]!r} at row {rows[0] + 2})"
                if len(rows)
                else ""
            )
            raise DataError(
                f"{where}: feature column {column!r} is not numeric{example}; "
                "encode it as numbers or drop it"
            )
    missing = frame.isna()
    if missing.to_numpy().any():
        row, col = np.argwhere(missing.to_numpy())[0]
        raise DataError(
            f"{where}: empty or NaN cell in column {frame.columns[col]!r} at row {row + 2} "
            "(line number in the file); fill or drop such rows"
        )
    labels = frame[target].to_numpy()
    return _make_dataset(features.to_numpy(dtype=np.float64), labels, where, task)


def _refuse_duplicate_columns(content: bytes, where: str) -> None:
    """pandas renames a repeated header (``a``, ``a.1``): the user would never know."""
    lines = content[:65536].decode("utf-8", errors="replace").splitlines()
    try:
        rows = list(csv.reader(lines[:1], skipinitialspace=True))
    except csv.Error:  # not a readable header: pandas says why in its own error
        return
    for row in rows:
        seen: set[str] = set()
        for name in (n.strip() for n in row):
            if name in seen:
                raise DataError(
                    f"{where}: column {short_value(name)} appears twice in the header; "
                    "give every column its own name"
                )
            seen.add(name)


def _load_npz(content: bytes, where: str, task: str) -> Dataset:
    if not content.startswith(b"PK"):  # an .npz is a zip; np.load would read an .npy too
        raise DataError(
            f"{where}: not an .npz (zip) archive; save with np.savez(path, X=features, y=labels)"
        )
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as npz:
            names = set(npz.files)
            for key in ("X", "y"):
                if key not in names:
                    raise DataError(
                        f"{where}: array {key!r} is missing (found: "
                        f"{', '.join(sorted(names)) or 'none'}); save with "
                        "np.savez(path, X=features, y=labels)"
                    )
            x, y = npz["X"], npz["y"]
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        detail = " ".join(str(exc).split())
        raise DataError(f"{where}: cannot be read as .npz ({detail})") from None
    if x.ndim != 2:
        raise DataError(f"{where}: X must be 2-D (rows x features), got shape {x.shape}")
    if x.shape[1] == 0:
        raise DataError(f"{where}: X has no feature columns (shape {x.shape}); add features")
    if y.ndim != 1:
        raise DataError(f"{where}: y must be 1-D (one label per row), got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{where}: X has {len(x)} rows but y has {len(y)}; they must match")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{where}: X must be numeric, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        row, col = np.argwhere(~np.isfinite(x))[0]
        raise DataError(
            f"{where}: X has NaN or inf at row {row}, column {col}; fill or drop such rows"
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{where}: y has NaN or inf at row {np.argwhere(~np.isfinite(y))[0][0]}")
    return _make_dataset(x.astype(np.float64), y, where, task)


def _make_dataset(x: np.ndarray, labels: np.ndarray, where: str, task: str) -> Dataset:
    if not np.isfinite(x).all():
        row, col = np.argwhere(~np.isfinite(x))[0]
        raise DataError(f"{where}: infinite value at row {row}, feature {col}; fix or drop it")
    largest = float(np.abs(x).max(initial=0.0))
    if largest > MAX_FEATURE_MAGNITUDE:
        row, col = np.argwhere(np.abs(x) == largest)[0]
        raise DataError(
            f"{where}: feature {col} is {x[row, col]:g} at row {row}, beyond "
            f"{MAX_FEATURE_MAGNITUDE:g} in magnitude: standardizing it in float32 overflows "
            "and trials would learn nothing; rescale it (e.g. log or divide)"
        )
    if task == "regression" or (task == "auto" and is_regression_target(labels)):
        return _regression_dataset(x, labels, where)
    names = np.array([str(v) for v in labels])
    classes, y = np.unique(names, return_inverse=True)
    if len(classes) < 2:
        found = f"only {short_value(str(classes[0]))}" if len(classes) else "none"
        raise DataError(f"{where}: the target needs at least 2 classes, found {found}")
    if len(classes) > MAX_CLASSES or (len(classes) > 2 and 2 * len(classes) > len(names)):
        raise DataError(
            f"{where}: the target has {len(classes)} classes in {len(names)} rows (at most "
            f"{MAX_CLASSES}, and at least 2 rows per class on average); is it an id or a "
            "continuous value? pick a categorical label column"
        )
    return Dataset(x.astype(np.float32), y.astype(np.int64), tuple(str(c) for c in classes))


def is_regression_target(labels: np.ndarray) -> bool:
    """What ``--task auto`` reads as a regression target: floats with many distinct values."""
    return labels.dtype.kind == "f" and len(np.unique(labels)) > AUTO_REGRESSION_VALUES


def _regression_dataset(x: np.ndarray, labels: np.ndarray, where: str) -> Dataset:
    if labels.dtype.kind not in "fiu":
        bad = next((v for v in labels if not _is_number(v)), labels[0] if len(labels) else None)
        raise DataError(
            f"{where}: --task regression needs a numeric target, found {short_value(str(bad))}; "
            "fix the column, or use --task classification for labels"
        )
    y = labels.astype(np.float64)
    if not np.isfinite(y).all():
        raise DataError(
            f"{where}: the target has NaN or inf at row {np.flatnonzero(~np.isfinite(y))[0]}"
        )
    if np.unique(y).size < 2:
        raise DataError(f"{where}: the regression target is constant; nothing to learn")
    return Dataset(x.astype(np.float32), y, ())


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
