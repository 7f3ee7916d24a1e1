"""Parsing uploaded datasets as data only: ``.npz`` checked member by member before any array is read, and
plain CSV read line by line into compact arrays.

Both the API (to validate and describe an upload) and the worker (to train on it) parse with these
functions, so what was accepted is exactly what trains. Every size is priced before it is paid: an
``.npz``'s arrays from their zip entries and ``.npy`` headers (numpy allocates from the header, so a
few-MB file could otherwise ask for many GB), a CSV by the values read so far.
"""

from __future__ import annotations

import array
import csv
import io
import math
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from core.datasets import DatasetInfo, input_divisor
from core.errors import DatasetError, DatasetTooLarge

MAX_FEATURES = 1_000_000
#: A classification label is below this: labels are stored as uint16, and ``bincount`` stays small.
MAX_LABEL = 65_536
#: ``class_counts`` is kept in the dataset's ``info`` row up to this many classes, so the row stays small.
MAX_COUNTED_CLASSES = 1_024
#: x, y, x_test, y_test and a few more: the zip's central directory is parsed only below this.
MAX_NPZ_MEMBERS = 16
MAX_CSV_COLUMNS = 100_000
#: A physical CSV line longer than this is refused before csv splits it into fields.
MAX_CSV_LINE_CHARS = 8 * 1024 * 1024
ARRAYS = ("x", "y", "x_test", "y_test")
#: bool, signed and unsigned integers, floats: no objects, strings, complex, dates or records.
PLAIN_KINDS = frozenset("biuf")


@dataclass
class Arrays:
    """Features in their compact upload dtype (uint8 stays uint8; floats become float32), labels uint8/uint16."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(x_test, y_test) when the upload brings its own test split: the two come together or not at all."""
        if self.x_test is None or self.y_test is None:
            return None
        return self.x_test, self.y_test


def _source(data: bytes | IO[bytes]) -> IO[bytes]:
    return io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data


def _mb(n: int) -> str:
    return f"{n:,} bytes ({n / 2**20:,.1f} MiB)"


# --------------------------------------------------------------------------- labels and features


def _labels(y: np.ndarray, what: str) -> np.ndarray:
    """Non-negative integers below ``MAX_LABEL`` as uint8/uint16; (N, 1) is taken as (N,).

    Bounds are checked in the array's own dtype before any cast, so uint64 ≥ 2**63 or a float of 1e300 is
    refused instead of wrapping or overflowing."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{what} must be a 1-d array of integer class labels, got shape {list(y.shape)}")
    if y.dtype.kind not in PLAIN_KINDS:
        raise DatasetError(f"{what} must hold integer class labels, not {y.dtype}")
    if y.size == 0:
        return y.astype(np.uint8)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise DatasetError(f"{what} has NaN or infinite labels")
        if not np.all(y == np.floor(y)):
            raise DatasetError(f"{what} must hold integer class labels")
    low, high = y.min(), y.max()
    if low < 0:
        raise DatasetError(f"{what} has negative labels; classes are 0..k-1")
    if high >= MAX_LABEL:
        raise DatasetError(f"{what} has label {high}; classification labels are below {MAX_LABEL:,}")
    return y.astype(np.uint8 if high < 256 else np.uint16)


def _features(x: np.ndarray, what: str) -> np.ndarray:
    """Integers and bools are kept as they are (compact in storage); floats become float32, which is what trains,
    and must stay finite as float32 (1e300 does not)."""
    if x.dtype.kind not in PLAIN_KINDS:
        raise DatasetError(f"{what} must be numeric, not {x.dtype}")
    if x.ndim < 2:
        raise DatasetError(f"{what} must have a sample axis and features, got shape {list(x.shape)}")
    if x.dtype.kind == "f":
        with np.errstate(over="ignore"):
            x = x.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise DatasetError(f"{what} has NaN or infinite values (as float32)")
    return x


def with_int64_labels(arrays: Arrays) -> Arrays:
    """For the worker: int64 labels (what selection and Keras index with); features stay compact until the split
    widens to float32 only the rows a job uses (``worker.data``)."""
    y_test = None if arrays.y_test is None else arrays.y_test.astype(np.int64, copy=False)
    return Arrays(arrays.x, arrays.y.astype(np.int64, copy=False), arrays.x_test, y_test)


# --------------------------------------------------------------------------- .npz


@dataclass(frozen=True)
class Member:
    """What one ``.npy`` inside an ``.npz`` declares, read from its zip entry and header alone."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int

    @property
    def memory(self) -> int:
        """Bytes parsing it takes: the array, plus the float32 copy ``_features`` makes of a non-float32 float."""
        extra = 4 * math.prod(self.shape) if self.dtype.kind == "f" and self.dtype != np.float32 else 0
        return self.nbytes + extra


#: The stdlib's own reader of a zip's end record; private, so typeshed leaves it (and its index) out.
_END_RECORD: Callable[[IO[bytes]], list[Any] | None] = zipfile._EndRecData  # type: ignore[attr-defined]
_ENTRIES_TOTAL: int = zipfile._ECD_ENTRIES_TOTAL  # type: ignore[attr-defined]


def _entry_count(stream: IO[bytes]) -> int:
    """From the zip's end record, before ``ZipFile`` builds an object per entry of a central directory
    that could list hundreds of thousands of them."""
    endrec = _END_RECORD(stream)
    if endrec is None:
        raise DatasetError(
            "not a readable .npz file: no zip end record (a truncated file, or not a zip: np.savez "
            "writes one, a single .npy is not an .npz)"
        )
    return int(endrec[_ENTRIES_TOTAL])


def _declared(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    if not info.filename.endswith(".npy"):
        raise DatasetError(f"the .npz member {info.filename[:80]!r} is not a .npy array")
    name = info.filename[:-4]
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise DatasetError(f"array {name!r}: .npy format {version} is not plain data")
        header = member.tell()
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None or dtype.kind not in PLAIN_KINDS:
        raise DatasetError(
            f"not a plain-data .npz file: array {name!r} is {dtype}; numbers or bools only "
            "(no pickled objects, strings or records)"
        )
    if any(d < 0 for d in shape):
        raise DatasetError(f"array {name!r} declares the shape {list(shape)}")
    nbytes = math.prod(shape) * dtype.itemsize
    if header + nbytes != info.file_size:
        raise DatasetError(
            f"array {name!r} declares {list(shape)} {dtype} ({_mb(nbytes)}) but its zip entry "
            f"holds {info.file_size - header:,} bytes of data"
        )
    return Member(name, tuple(shape), dtype, nbytes)


def inspect_npz(stream: IO[bytes], max_bytes: int | None) -> dict[str, Member]:
    """Every member's declared shape and dtype, and their total decompressed size against ``max_bytes``,
    without reading any array."""
    try:
        count = _entry_count(stream)
        if count > MAX_NPZ_MEMBERS:
            raise DatasetError(f"the .npz has {count:,} members; at most {MAX_NPZ_MEMBERS} arrays are read")
        stream.seek(0)
        archive = zipfile.ZipFile(stream)
        infos = archive.infolist()
        if len(infos) > MAX_NPZ_MEMBERS:
            raise DatasetError(f"the .npz has {len(infos):,} members; at most {MAX_NPZ_MEMBERS} arrays are read")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise DatasetError("the .npz has two members of the same name")
        stated = sum(i.file_size for i in infos)
        if max_bytes is not None and stated > max_bytes:
            raise DatasetTooLarge(
                f"the .npz members declare {_mb(stated)} decompressed; the limit is "
                f"{_mb(max_bytes)} (TRAINER_MAX_DATASET_BYTES)"
            )
        members = {m.name: m for m in (_declared(archive, i) for i in infos)}
    except DatasetError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        EOFError,
        OSError,
        ValueError,
        RuntimeError,
        SyntaxError,
        TypeError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as exc:
        raise DatasetError(f"not a readable .npz file: {str(exc)[:200]}") from None
    if max_bytes is not None:
        total = sum(m.memory for m in members.values())
        if total > max_bytes:
            big = max(members.values(), key=lambda m: m.memory)
            raise DatasetTooLarge(
                f"the arrays declare {_mb(total)} decompressed (with the float32 copy of float features; the "
                f"largest is {big.name!r}, {list(big.shape)} {big.dtype}); the limit is {_mb(max_bytes)} "
                f"(TRAINER_MAX_DATASET_BYTES)"
            )
    return members


def parse_npz(data: bytes | IO[bytes], max_bytes: int | None) -> Arrays:
    """``max_bytes`` None only for a dataset the API already accepted (the worker reading it back)."""
    stream = _source(data)
    members = inspect_npz(stream, max_bytes)
    if not {"x", "y"} <= members.keys():
        raise DatasetError(f"an .npz upload needs arrays 'x' and 'y' (found {sorted(members)[:10]})")
    if ("x_test" in members) != ("y_test" in members):
        raise DatasetError("give both 'x_test' and 'y_test', or neither")
    arrays = {}
    try:
        with zipfile.ZipFile(stream) as archive:
            for name in ARRAYS:
                if name in members:
                    with archive.open(f"{name}.npy") as member:
                        arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:  # a bad CRC, a stream shorter than declared
        raise DatasetError(f"not a readable .npz file: {str(exc)[:200]}") from None
    out = Arrays(_features(arrays["x"], "x"), _labels(arrays["y"], "y"))
    if "x_test" in arrays:
        out.x_test, out.y_test = _features(arrays["x_test"], "x_test"), _labels(arrays["y_test"], "y_test")
    _check_lengths(out)
    return out


# --------------------------------------------------------------------------- .csv


class _Lines:
    """The text's physical lines for ``csv.reader``, each bounded in length, and the separators of the row
    being read bounded in number, so a hostile line is refused before it becomes a list of fields."""

    def __init__(self, text: IO[str]):
        self.text = text
        self.commas = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(MAX_CSV_LINE_CHARS)
        if not line:
            raise StopIteration
        if len(line) >= MAX_CSV_LINE_CHARS and not line.endswith("\n"):
            raise DatasetError(f"a .csv line is over {MAX_CSV_LINE_CHARS:,} characters")
        self.commas += line.count(",")
        if self.commas >= MAX_CSV_COLUMNS:
            raise DatasetError(f"a .csv row has over {MAX_CSV_COLUMNS:,} columns")
        return line


def _short(names: list[str]) -> list[str]:
    return [n if len(n) <= 40 else n[:40] + "…" for n in names[:20]]


def parse_csv(data: bytes | IO[bytes], label_column: str, max_bytes: int | None) -> Arrays:
    """Values go straight into float32 (features) and float64 (labels) buffers as rows are read: never a
    Python float per value, and the limit is checked as they arrive."""
    text = io.TextIOWrapper(_source(data), encoding="utf-8-sig", newline="")
    lines = _Lines(text)
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if not header:
            raise DatasetError("the .csv file is empty")
        if label_column not in header:
            raise DatasetError(f"label column {label_column[:40]!r} is not in the header {_short(header)}")
        label_at = header.index(label_column)
        lines.commas = 0
        width = len(header) - 1
        values, labels = array.array("f"), array.array("d")
        _read_rows(reader, lines, header, label_at, max_bytes, values, labels)
    except UnicodeDecodeError:
        raise DatasetError("a .csv upload must be UTF-8 text") from None
    except csv.Error as exc:
        raise DatasetError(f"not a readable .csv file: {str(exc)[:200]}") from None
    if not labels:
        raise DatasetError("the .csv file has a header but no rows")
    x = np.frombuffer(values, dtype=np.float32).reshape(len(labels), width)
    arrays = Arrays(_features(x, "the features"), _labels(np.frombuffer(labels, dtype=np.float64), label_column))
    _check_lengths(arrays)
    return arrays


def _read_rows(
    reader: Iterator[list[str]],
    lines: _Lines,
    header: list[str],
    label_at: int,
    max_bytes: int | None,
    values: array.array[float],
    labels: array.array[float],
) -> None:
    """Each row's numbers appended to ``values`` (features) and ``labels``, the limit checked per row."""
    for line_no, row in enumerate(reader, start=2):
        lines.commas = 0
        if not row:
            continue
        if len(row) != len(header):
            raise DatasetError(f"line {line_no} has {len(row)} fields; the header has {len(header)}")
        try:
            numbers = [float(v) for v in row]
        except ValueError:
            raise DatasetError(f"line {line_no} has a value that is not a number") from None
        labels.append(numbers.pop(label_at))
        values.extend(numbers)
        if max_bytes is not None and 4 * len(values) + 8 * len(labels) > max_bytes:
            raise DatasetTooLarge(
                f"the .csv's values take over {_mb(max_bytes)} by line {line_no} (features as "
                f"float32); that is the limit (TRAINER_MAX_DATASET_BYTES)"
            )


# --------------------------------------------------------------------------- both


def _check_lengths(a: Arrays) -> None:
    if len(a.x) != len(a.y):
        raise DatasetError(f"x has {len(a.x)} samples but y has {len(a.y)}")
    if len(a.x) < 2:
        raise DatasetError("at least 2 samples are needed")
    if a.test is not None:
        x_test, y_test = a.test
        if len(x_test) != len(y_test):
            raise DatasetError(f"x_test has {len(x_test)} samples but y_test has {len(y_test)}")
        if x_test.shape[1:] != a.x.shape[1:]:
            raise DatasetError(f"x_test samples are {list(x_test.shape[1:])}, x samples {list(a.x.shape[1:])}")
    if int(np.prod(a.x.shape[1:])) > MAX_FEATURES:
        raise DatasetError(f"at most {MAX_FEATURES:,} features per sample")


def parse(data: bytes | IO[bytes], fmt: str, label_column: str | None = None, *, max_bytes: int | None) -> Arrays:
    if fmt == "npz":
        return parse_npz(data, max_bytes)
    if fmt == "csv":
        if not label_column:
            raise DatasetError("a .csv upload needs label_column")
        return parse_csv(data, label_column, max_bytes)
    raise DatasetError(f"unsupported format {fmt[:20]!r}: upload .npz or .csv")


def stored(arrays: Arrays) -> io.BytesIO:
    """Compressed, in the compact dtypes: a uint8 image set stays a quarter of its float32 size, and less."""
    buffer = io.BytesIO()
    if arrays.test is None:
        np.savez_compressed(buffer, x=arrays.x, y=arrays.y)
    else:
        x_test, y_test = arrays.test
        np.savez_compressed(buffer, x=arrays.x, y=arrays.y, x_test=x_test, y_test=y_test)
    buffer.seek(0)
    return buffer


def describe(dataset_id: str, name: str, arrays: Arrays) -> DatasetInfo:
    """Labels are already below ``MAX_LABEL``, so ``bincount`` is bounded; counts past ``MAX_COUNTED_CLASSES``
    classes are left out of the row (a class subset of such a set is then refused by ``selection``)."""
    highest = int(arrays.y.max())
    if arrays.y_test is not None and arrays.y_test.size:
        highest = max(highest, int(arrays.y_test.max()))
    n_classes = highest + 1
    counts = () if n_classes > MAX_COUNTED_CLASSES else tuple(int(c) for c in np.bincount(arrays.y, minlength=n_classes))
    return DatasetInfo(
        name=dataset_id,
        n_samples=len(arrays.x),
        feature_shape=tuple(int(d) for d in arrays.x.shape[1:]),
        n_classes=n_classes,
        description=name,
        storage_dtype=str(arrays.x.dtype),
        input_divisor=input_divisor(str(arrays.x.dtype)),
        n_test_samples=0 if arrays.x_test is None else len(arrays.x_test),
        source="upload",
        class_counts=counts,
    )
