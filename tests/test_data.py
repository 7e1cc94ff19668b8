"""Data loading, content hashing and the seeded split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scheduler.data import load_dataset, synthetic_dataset
from seqsweep.dataset import Dataset, split_dataset, split_sizes
from seqsweep.errors import DataError


def test_synthetic_set_is_deterministic_and_shaped_like_the_article() -> None:
    a, b = synthetic_dataset(), synthetic_dataset()
    assert a.content_hash() == b.content_hash()
    assert a.X.shape == (4000, 5)
    assert a.n_classes == 2
    assert 0.4 < a.y.mean() < 0.6  # balanced enough that accuracy means something


def test_synthetic_set_is_not_linearly_trivial() -> None:
    """A linear model sits near chance; noise caps any model below 100%."""
    s = split_dataset(synthetic_dataset(), 0, 0.2, 0.2)
    design = np.c_[s.x_train, np.ones(len(s.x_train))]
    w = np.linalg.lstsq(design, s.y_train * 2.0 - 1.0, rcond=None)[0]
    linear = ((np.c_[s.x_val, np.ones(len(s.x_val))] @ w > 0) == s.y_val).mean()
    assert linear < 0.7


def test_bytes_round_trip_keeps_the_hash() -> None:
    data = synthetic_dataset(n_rows=50)
    again = Dataset.from_bytes(data.to_bytes())
    assert again.content_hash() == data.content_hash()
    np.testing.assert_array_equal(again.X, data.X)
    assert again.classes == data.classes


def test_split_is_seeded_and_standardized() -> None:
    data = synthetic_dataset(n_rows=500)
    a, b, c = (split_dataset(data, s, 0.2, 0.2) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (300, 100, 100)
    np.testing.assert_allclose(a.x_train.mean(axis=0), 0, atol=1e-5)


def test_csv_with_string_labels(tiny_csv: Path) -> None:
    data = load_dataset(tiny_csv, "label")
    assert data.classes == ("no", "yes")
    assert data.X.shape == (240, 5)
    assert data.X.dtype == np.float32


def test_npz_with_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.arange(60.0).reshape(20, 3), y=np.array([3, 7] * 10))
    data = load_dataset(path, None)
    assert data.classes == ("3", "7")
    assert list(data.y[:2]) == [0, 1]


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "target", "fragment"),
    [
        ("a,b,label\n1,2,x\n3,4,y\n", "target", "target column 'target' not found"),
        ("a,b,label\n1,oops,x\n3,4,y\n", "label", "feature column 'b' is not numeric"),
        ("a,b,label\n1,,x\n3,4,y\n", "label", "empty or NaN cell in column 'b' at row 2"),
        ("a,b,label\n1,2,x\n3,4,x\n", "label", "at least 2 classes, found only 'x'"),
        ("label\nx\ny\n", "label", "no feature columns"),
        ("", "label", "cannot be read as CSV"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, target: str, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment.replace("(", r"\(")) as err:
        load_dataset(_csv(tmp_path, text), target)
    assert str(err.value).startswith(f"data file {tmp_path / 'bad.csv'}:")


def test_bad_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((4, 2)))
    with pytest.raises(DataError, match="array 'y' is missing"):
        load_dataset(path, None)
    np.savez(path, X=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match="X has 4 rows but y has 3"):
        load_dataset(path, None)


def test_missing_file_and_wrong_flags(tmp_path: Path, tiny_csv: Path) -> None:
    with pytest.raises(DataError, match="not found; check the path given to --data"):
        load_dataset(tmp_path / "nope.csv", "y")
    with pytest.raises(DataError, match="needs --target"):
        load_dataset(tiny_csv, None)
    with pytest.raises(DataError, match="--target is set but --data is not"):
        load_dataset(None, "y")


def test_too_few_rows_to_split() -> None:
    with pytest.raises(DataError, match="too few to split"):
        split_sizes(6, 0.2, 0.2)
    assert split_sizes(10, 0.2, 0.2) == (6, 2, 2)
