"""Parsing uploaded datasets as data only: ``np.load(allow_pickle=False)`` and plain CSV.

Both the API (to validate and describe an upload) and the worker (to train on it) parse with these
functions, so what was accepted is exactly what trains.
"""
from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass

import numpy as np

from core.datasets import DatasetInfo
from core.errors import DatasetError

MAX_FEATURES = 1_000_000


@dataclass
class Arrays:
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def _labels(y: np.ndarray, what: str) -> np.ndarray:
    if y.ndim != 1:
        raise DatasetError(f"{what} must be a 1-d array of integer class labels, got shape {list(y.shape)}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DatasetError(f"{what} must hold integer class labels")
        y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DatasetError(f"{what} has negative labels; classes are 0..k-1")
    return y.astype(np.int64)


def _features(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DatasetError(f"{what} must be numeric, not {x.dtype}")
    if x.ndim < 2:
        raise DatasetError(f"{what} must have a sample axis and features, got shape {list(x.shape)}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"{what} has NaN or infinite values")
    return x


def parse_npz(data: bytes) -> Arrays:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            names = set(npz.files)
            if not {"x", "y"} <= names:
                raise DatasetError(f"an .npz upload needs arrays 'x' and 'y' (found {sorted(names)})")
            arrays = {k: npz[k] for k in ("x", "y", "x_test", "y_test") if k in names}
    except DatasetError:
        raise
    except ValueError as exc:  # pickled objects refused by allow_pickle=False end up here
        raise DatasetError(f"not a plain-data .npz file: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"not a readable .npz file: {exc}") from None
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DatasetError("give both 'x_test' and 'y_test', or neither")
    out = Arrays(_features(arrays["x"], "x"), _labels(arrays["y"], "y"))
    if "x_test" in arrays:
        out.x_test, out.y_test = _features(arrays["x_test"], "x_test"), _labels(arrays["y_test"], "y_test")
    _check_lengths(out)
    return out


def parse_csv(data: bytes, label_column: str) -> Arrays:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError("a .csv upload must be UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise DatasetError("the .csv file is empty")
    if label_column not in header:
        raise DatasetError(f"label column {label_column!r} is not in the header {header[:20]}")
    label_at = header.index(label_column)
    rows, labels = [], []
    for line_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DatasetError(f"line {line_no} has {len(row)} fields; the header has {len(header)}")
        try:
            values = [float(v) for v in row]
        except ValueError:
            raise DatasetError(f"line {line_no} has a value that is not a number") from None
        labels.append(values.pop(label_at))
        rows.append(values)
    if not rows:
        raise DatasetError("the .csv file has a header but no rows")
    arrays = Arrays(_features(np.asarray(rows), "the features"), _labels(np.asarray(labels), label_column))
    _check_lengths(arrays)
    return arrays


def _check_lengths(a: Arrays) -> None:
    if len(a.x) != len(a.y):
        raise DatasetError(f"x has {len(a.x)} samples but y has {len(a.y)}")
    if len(a.x) < 2:
        raise DatasetError("at least 2 samples are needed")
    if a.x_test is not None:
        if len(a.x_test) != len(a.y_test):
            raise DatasetError(f"x_test has {len(a.x_test)} samples but y_test has {len(a.y_test)}")
        if a.x_test.shape[1:] != a.x.shape[1:]:
            raise DatasetError(f"x_test samples are {list(a.x_test.shape[1:])}, x samples {list(a.x.shape[1:])}")
    if int(np.prod(a.x.shape[1:])) > MAX_FEATURES:
        raise DatasetError(f"at most {MAX_FEATURES:,} features per sample")


def parse(data: bytes, fmt: str, label_column: str | None = None) -> Arrays:
    if fmt == "npz":
        return parse_npz(data)
    if fmt == "csv":
        if not label_column:
            raise DatasetError("a .csv upload needs label_column")
        return parse_csv(data, label_column)
    raise DatasetError(f"unsupported format {fmt!r}: upload .npz or .csv")


def describe(dataset_id: str, name: str, arrays: Arrays) -> DatasetInfo:
    labels = arrays.y if arrays.y_test is None else np.concatenate([arrays.y, arrays.y_test])
    return DatasetInfo(
        name=dataset_id, n_samples=len(arrays.x), feature_shape=tuple(int(d) for d in arrays.x.shape[1:]),
        n_classes=int(labels.max()) + 1, description=name,
        n_test_samples=0 if arrays.x_test is None else len(arrays.x_test), source="upload",
        class_counts=tuple(int(c) for c in np.bincount(arrays.y, minlength=int(labels.max()) + 1)),
    )
