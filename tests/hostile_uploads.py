"""Hostile dataset uploads: zip bombs, archives that lie about their sizes, headers that declare many GB,
labels and CSV fields built to make the API allocate. Each must be refused with a 4xx while the API's
memory stays flat; the bad-input catalogue, the gunicorn RSS test and ``bench/memory.py`` all send these.

Archives are written byte by byte (``Entry``) so a central directory can say what the data is not.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from functools import cache

import numpy as np

GB = 1024**3


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    filename: str
    form: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One zip member as written: ``data`` as stored (deflated when ``method`` is 8), and the sizes and CRC
    its headers declare, which need not be true."""

    name: str
    data: bytes
    file_size: int
    crc: int
    method: int = 8
    flags: int = 0


def zip_archive(entries: list[Entry]) -> bytes:
    """A zip of these entries; a declared size ≥ 4 GiB gets a zip64 extra field, as zipfile writes it."""
    out, central = io.BytesIO(), []
    for e in entries:
        name = e.name.encode()
        big = e.file_size >= 0xFFFFFFFF
        offset = out.tell()
        usize = 0xFFFFFFFF if big else e.file_size
        csize = 0xFFFFFFFF if big else len(e.data)
        extra = struct.pack("<HHQQ", 1, 16, e.file_size, len(e.data)) if big else b""
        out.write(
            struct.pack(
                "<4s5H3L2H",
                b"PK\x03\x04",
                45 if big else 20,
                e.flags,
                e.method,
                0,
                0x21,
                e.crc,
                csize,
                usize,
                len(name),
                len(extra),
            )
            + name
            + extra
            + e.data
        )
        cextra = struct.pack("<HHQ", 1, 8, e.file_size) if big else b""
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                45 if big else 20,
                45 if big else 20,
                e.flags,
                e.method,
                0,
                0x21,
                e.crc,
                len(e.data),
                usize,
                len(name),
                len(cextra),
                0,
                0,
                0,
                0,
                offset,
            )
            + name
            + cextra
        )
    start = out.tell()
    directory = b"".join(central)
    out.write(directory)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), start, 0))
    return out.getvalue()


def npy_header(shape: tuple, descr: str = "<f8", version: tuple = (1, 0)) -> bytes:
    """A ``.npy`` header declaring ``shape`` and ``descr``, whatever follows it."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buffer, header)
    else:
        np.lib.format.write_array_header_2_0(buffer, header)
        if version != (2, 0):
            raw = bytearray(buffer.getvalue())
            raw[6:8] = bytes(version)
            return bytes(raw)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def honest(name: str, raw: bytes) -> Entry:
    return Entry(name, deflate(raw), len(raw), zlib.crc32(raw))


def npz_of(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


Y = honest("y.npy", npy(np.arange(4)))
X = honest("x.npy", npy(np.zeros((4, 2))))


@cache
def zero_bomb(header: bytes, zeros: int) -> Entry:
    """``header`` then ``zeros`` zero bytes, really deflated (about 1000:1) and with a true CRC. Each MiB is
    flushed to an independent block, so it is compressed once and repeated."""
    mib = 1 << 20
    assert zeros % mib == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(mib)) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    zero_mib = bytes(mib)
    for _ in range(zeros // mib):
        crc = zlib.crc32(zero_mib, crc)
    return Entry("x.npy", head + block * (zeros // mib) + c.flush(), len(header) + zeros, crc)


def renamed(e: Entry, name: str) -> Entry:
    return Entry(name, e.data, e.file_size, e.crc, e.method, e.flags)


def _lying_small() -> Entry:
    """Declares 1,000 bytes of uint8; its stream inflates to 64 MiB: a reader bounded by the declared size stops."""
    header = npy_header((100, 10), "|u1")
    real = zero_bomb(header, 64 << 20)
    return Entry("x.npy", real.data, len(header) + 1000, real.crc)


def _truncated_stream() -> Entry:
    """Declares 8 MB of float64 that its stream does not hold."""
    raw = npy_header((1000, 1000)) + bytes(1000)
    return Entry("x.npy", deflate(raw), len(npy_header((1000, 1000))) + 8_000_000, zlib.crc32(raw))


def npz_cases() -> list[Hostile]:
    big = npy_header((1_000_000, 1_000))  # 8 GB of float64
    return [
        Hostile(
            "npz declaring 8 GB (zip64 entry)",
            zip_archive([Entry("x.npy", deflate(big + bytes(4096)), len(big) + 8 * 10**9, 0), Y]),
            "gb.npz",
        ),
        Hostile(
            "npz header declaring 80 GB in a small entry",
            zip_archive([honest("x.npy", npy_header((100_000, 100_000)) + bytes(64)), Y]),
            "hdr.npz",
        ),
        Hostile(
            "zip bomb: 1 GiB of zeros in about 1 MB",
            zip_archive([zero_bomb(npy_header((1 << 20, 1024), "|u1"), GB), Y]),
            "bomb.npz",
        ),
        Hostile(
            "two members of 400 MiB each",
            zip_archive(
                [
                    zero_bomb(npy_header((400, 1 << 20), "|u1"), 400 << 20),
                    renamed(zero_bomb(npy_header((400 << 20,), "|u1"), 400 << 20), "y.npy"),
                ]
            ),
            "two.npz",
        ),
        Hostile(
            "float16 x of 200 MiB whose float32 copy takes 400 MiB more",
            zip_archive([zero_bomb(npy_header((100, 1 << 20), "<f2"), 200 << 20), Y]),
            "f16.npz",
        ),
        Hostile("member inflating past its declared size", zip_archive([_lying_small(), Y]), "lie.npz"),
        Hostile("member declaring more than its stream holds", zip_archive([_truncated_stream(), Y]), "short.npz"),
        Hostile(".npy named .npz", npy(np.zeros((4, 2))), "x.npz"),
        Hostile("truncated zip", npz_of(x=np.zeros((50, 4)), y=np.arange(50))[:-40], "cut.npz"),
        Hostile("10,000 members", zip_archive([honest(f"a{i}.npy", b"") for i in range(10_000)]), "many.npz"),
        Hostile("a member that is not .npy", zip_archive([X, Y, honest("evil.pkl", b"cos\nsystem\n")]), "pkl.npz"),
        Hostile("duplicate member names", zip_archive([X, Y, X]), "dup.npz"),
        Hostile("object dtype declared", zip_archive([honest("x.npy", npy_header((4, 2), "|O") + bytes(64)), Y]), "obj.npz"),
        Hostile(
            "structured dtype", npz_of(x=np.zeros((4, 2), dtype=[("a", "<f4"), ("b", "<i4")]), y=np.arange(4)), "rec.npz"
        ),
        Hostile("complex features", npz_of(x=np.zeros((4, 2), dtype=np.complex128), y=np.arange(4)), "c.npz"),
        Hostile("datetime features", npz_of(x=np.zeros((4, 2), dtype="datetime64[s]"), y=np.arange(4)), "dt.npz"),
        Hostile(
            ".npy format 3.0", zip_archive([honest("x.npy", npy_header((4, 2), version=(3, 0)) + bytes(64)), Y]), "v3.npz"
        ),
        Hostile("negative dimension", zip_archive([honest("x.npy", npy_header((-4, 2)) + bytes(64)), Y]), "neg.npz"),
        Hostile("encrypted member", zip_archive([Entry(X.name, X.data, X.file_size, X.crc, flags=1), Y]), "enc.npz"),
        Hostile(
            "unknown compression method", zip_archive([Entry(X.name, X.data, X.file_size, X.crc, method=99), Y]), "m99.npz"
        ),
        Hostile("uint64 labels >= 2**63", npz_of(x=np.zeros((4, 2)), y=np.array([0, 1, 2, 2**63], np.uint64)), "u64.npz"),
        Hostile("label 100,000,000", npz_of(x=np.zeros((2, 2)), y=np.array([0, 100_000_000])), "big.npz"),
        Hostile("label 65,536", npz_of(x=np.zeros((2, 2)), y=np.array([0, 65_536])), "65536.npz"),
        Hostile("float label 1e300", npz_of(x=np.zeros((2, 2)), y=np.array([0, 1e300])), "f300.npz"),
        Hostile("NaN label", npz_of(x=np.zeros((2, 2)), y=np.array([0, np.nan])), "nan.npz"),
        Hostile("float64 features overflowing float32", npz_of(x=np.full((2, 2), 1e300), y=np.arange(2)), "ovf.npz"),
    ]


def csv_cases() -> list[Hostile]:
    label = {"label_column": "y"}
    return [
        Hostile("csv label 100,000,000", b"a,y\n1,0\n2,100000000\n", "big.csv", label),
        Hostile("csv label 1e300", b"a,y\n1,0\n2,1e300\n", "e.csv", label),
        Hostile("csv label nan", b"a,y\n1,0\n2,nan\n", "n.csv", label),
        Hostile("csv features overflowing float32", b"a,y\n1e39,0\n2,1\n", "o.csv", label),
        Hostile("csv field over the csv module's limit", b"a,y\n" + b"1" * 200_000 + b",0\n2,1\n", "f.csv", label),
        Hostile("csv quoted field over the limit", b'a,y\n"' + b"1" * 200_000 + b'",0\n2,1\n', "q.csv", label),
        Hostile("csv 10 MB line", b"a,y\n" + b"1" * 10_000_000, "l.csv", label),
        Hostile("csv 200,000 columns", b",".join([b"c"] * 200_000) + b",y\n", "w.csv", label),
        Hostile("csv Latin-1", "é,y\n1,0\n2,1\n".encode("latin-1"), "lat.csv", label),
        Hostile("csv UTF-16", "a,y\n1,0\n2,1\n".encode("utf-16"), "u16.csv", label),
        Hostile("csv NUL in a field", b"a,y\n1\x00,0\n2,1\n", "nul.csv", label),
        Hostile("csv label column with NUL", b"a,y\n1,0\n2,1\n", "c.csv", {"label_column": "y\x00"}),
    ]


def form_cases() -> list[Hostile]:
    good = npz_of(x=np.zeros((4, 2)), y=np.arange(4))
    return [
        Hostile("file name of 300 characters", good, "d" * 296 + ".npz"),
        Hostile("name with NUL", good, "g.npz", {"name": "a\x00b"}),
        Hostile("name of 201 characters", good, "g.npz", {"name": "n" * 201}),
    ]


def cases() -> list[Hostile]:
    return npz_cases() + csv_cases() + form_cases()
