"""The IDX format (LeCun's MNIST files, and Fashion-MNIST's), gzipped or not, read with numpy alone.

Layout: two zero bytes, a type code, the number of dimensions, each dimension as a big-endian
uint32, then the values in C order, big-endian. The header is checked before anything is
allocated (the dimensions say how many bytes follow; a header that lies about them is an error,
not a 4 GB allocation), and the body must hold exactly that many bytes.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DatasetError

#: IDX type code → numpy dtype (big-endian, as the format stores them).
DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_DIMENSIONS = 4
GZIP_MAGIC = b"\x1f\x8b"


class IDXError(DatasetError):
    """The file is not a well-formed IDX file (or not one within the size limit)."""


def _read_exactly(stream: io.BufferedIOBase, n: int, path: Path, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise IDXError(f"{path.name}: truncated {what} ({len(data)} of {n:,} bytes)")
    return data


def parse_header(stream: io.BufferedIOBase, path: Path) -> tuple[np.dtype[Any], tuple[int, ...]]:
    magic = _read_exactly(stream, 4, path, "header")
    if magic[:2] != b"\x00\x00":
        raise IDXError(f"{path.name}: not an IDX file (magic {magic.hex()})")
    code, ndim = magic[2], magic[3]
    if code not in DTYPES:
        raise IDXError(f"{path.name}: unknown IDX type code 0x{code:02x}")
    if not 1 <= ndim <= MAX_DIMENSIONS:
        raise IDXError(f"{path.name}: {ndim} dimensions; at most {MAX_DIMENSIONS} are read")
    dims = struct.unpack(f">{ndim}I", _read_exactly(stream, 4 * ndim, path, "header"))
    return DTYPES[code], tuple(dims)


def read(path: str | Path, max_bytes: int) -> np.ndarray:
    """The array in the file, in native byte order; IDXError if it is malformed, truncated, has trailing
    bytes or declares more than ``max_bytes`` of values."""
    path = Path(path)
    try:
        with path.open("rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            dtype, dims = parse_header(stream, path)
            size = math.prod(dims) * dtype.itemsize
            if size > max_bytes:
                raise IDXError(
                    f"{path.name}: the header declares {list(dims)} values ({size:,} bytes); the limit is {max_bytes:,}"
                )
            body = _read_exactly(stream, size, path, "data")
            if stream.read(1):
                raise IDXError(f"{path.name}: bytes after the {list(dims)} values its header declares")
    except FileNotFoundError:
        raise IDXError(f"{path}: no such file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise IDXError(f"{path.name}: not a readable gzip file ({exc})") from None
    array = np.frombuffer(body, dtype=dtype).reshape(dims)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def write(path: str | Path, array: np.ndarray) -> None:
    """An IDX file (gzipped when the name ends in .gz); for tests and for making small IDX sets."""
    path = Path(path)
    codes = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX has no type for {array.dtype}")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = header + np.ascontiguousarray(array, dtype=DTYPES[codes[native]]).tobytes()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(body)
