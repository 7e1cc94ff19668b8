"""Datasets as content-addressed bytes, and the seeded split every worker repeats.

Workers share no filesystem with the scheduler, so a study's dataset is stored
once in the results DB under the SHA-256 of its content. A worker fetches it
by that hash, decodes it once per process and splits it exactly as every other
worker does, because the split depends only on the data and the study seed.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np

from seqsweep.errors import DataError
from seqsweep.seeds import split_rng
from seqsweep.vocab import Task

#: Each of train, validation and test needs at least this many rows.
MIN_ROWS_PER_SPLIT = 2


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features ``X`` (float32, rows x features), labels ``y`` (class indices) and class names;
    or, for regression, float targets ``y`` and no classes."""

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]

    @property
    def task(self) -> Task:
        return Task.CLASSIFICATION if self.classes else Task.REGRESSION

    @property
    def n_outputs(self) -> int:
        """Output units of the network: one per class, or one number."""
        return len(self.classes) or 1

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def content_hash(self) -> str:
        """Return the SHA-256 of the data itself, independent of how it is encoded."""
        digest = hashlib.sha256()
        header = {"shape": list(self.X.shape), "classes": list(self.classes)}
        digest.update(json.dumps(header, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(self.X, dtype="<f4").tobytes())
        digest.update(np.ascontiguousarray(self.y, dtype=self._y_dtype).tobytes())
        return digest.hexdigest()

    def to_bytes(self) -> bytes:
        """Encode as a compressed ``.npz`` blob, readable without pickle."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            X=self.X.astype("<f4"),
            y=self.y.astype(self._y_dtype),
            classes=np.array(self.classes, dtype=str),
        )
        return buffer.getvalue()

    @property
    def _y_dtype(self) -> str:
        return "<i8" if self.classes else "<f8"

    @classmethod
    def from_bytes(cls, blob: bytes) -> Dataset:
        """Decode a blob written by :meth:`to_bytes`."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            return cls(npz["X"], npz["y"], tuple(str(c) for c in npz["classes"]))


@dataclass(frozen=True, eq=False)
class Splits:
    """Train, validation and test arrays, standardized with training statistics."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    task: Task = Task.CLASSIFICATION
    #: Regression targets are standardized with the training rows' mean and standard
    #: deviation; metrics are scaled back into the target's own units with these.
    y_mean: float = 0.0
    y_std: float = 1.0

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task is Task.CLASSIFICATION else 1


def split_sizes(n_rows: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Return (train, val, test) row counts; raise DataError when a split would be too small."""
    n_val = round(n_rows * val_fraction)
    n_test = round(n_rows * test_fraction)
    n_train = n_rows - n_val - n_test
    if min(n_train, n_val, n_test) < MIN_ROWS_PER_SPLIT:
        need = int(
            np.ceil(
                MIN_ROWS_PER_SPLIT
                / min(val_fraction, test_fraction, 1 - val_fraction - test_fraction)
            )
        )
        raise DataError(
            f"dataset: {n_rows} rows are too few to split into train/validation/test "
            f"({n_train}/{n_val}/{n_test}); each needs at least {MIN_ROWS_PER_SPLIT} rows, "
            f"so provide at least {need} rows"
        )
    return n_train, n_val, n_test


def split_dataset(data: Dataset, seed: int, val_fraction: float, test_fraction: float) -> Splits:
    """Shuffle with ``seed``, cut into train/val/test and standardize the features.

    The mean and standard deviation come from the training rows only, so no
    information from validation or test leaks into training; a regression target is
    standardized the same way.
    """
    n_train, n_val, _ = split_sizes(data.n_rows, val_fraction, test_fraction)
    order = split_rng(seed).permutation(data.n_rows)
    train, val, test = np.split(order, [n_train, n_train + n_val])
    x = data.X.astype(np.float32)
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # a constant column stays constant instead of dividing by zero
    x = (x - mean) / std
    if data.task is Task.REGRESSION:
        y = data.y.astype(np.float64)
        y_mean, y_std = float(y[train].mean()), float(y[train].std()) or 1.0
        scaled = ((y - y_mean) / y_std).astype(np.float32)
        return Splits(
            x[train], scaled[train], x[val], scaled[val], x[test], scaled[test], 0,
            Task.REGRESSION, y_mean, y_std,
        )  # fmt: skip
    return Splits(
        x[train], data.y[train], x[val], data.y[val], x[test], data.y[test], data.n_classes
    )
