"""Every input has a price, checked before it is paid: upload sizes from zip entries and .npy headers,
labels bounded, datasets stored compressed and compact, JSON bodies cut at the limit on the bytes read
(chunked too) and parsed once — and a real gunicorn API whose memory stays flat while it refuses bombs."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from core import uploads
from core.artifacts import read_all
from core.errors import DatasetError
from core.models import Artifact
from stack.processes import clean_env, migrate, start_gunicorn
from tests import hostile_uploads as hostile
from tests.support import small_recipe

MB = 1024 * 1024


def upload(client, data: bytes, filename: str, **form):
    return client.post(
        "/v1/datasets", data={"file": (io.BytesIO(data), filename), **form}, content_type="multipart/form-data"
    )


# --------------------------------------------------------------------------- sizes priced from headers


def test_an_npz_declaring_gigabytes_is_413_naming_the_limit_and_the_declared_size(client):
    case = hostile.npz_cases()[0]
    response = upload(client, case.data, case.filename)
    assert response.status_code == 413 and response.mimetype == "application/problem+json"
    detail = response.get_json()["detail"]
    assert "8,000,000,288 bytes" in detail and "536,870,912 bytes" in detail, detail


def test_the_limit_counts_the_float32_copy_of_float_features():
    data = hostile.npz_of(x=np.zeros((100, 10), np.float16), y=np.zeros(100, np.uint8))  # 2,000 + 4,000 + 100 bytes
    assert uploads.parse_npz(data, max_bytes=6_100).x.dtype == np.float32
    with pytest.raises(uploads.DatasetTooLarge, match="float32 copy"):
        uploads.parse_npz(data, max_bytes=6_099)


def test_a_member_is_never_inflated_past_its_declared_size():
    """64 MiB of zeros behind an entry that declares 1,000 bytes: refused on its CRC after 1,000 bytes."""
    lying = hostile.zip_archive([hostile._lying_small(), hostile.Y])
    with pytest.raises(DatasetError, match="Bad CRC"):
        uploads.parse_npz(lying, max_bytes=10 * MB)


def test_a_csv_over_the_limit_is_refused_while_it_is_read():
    rows = "\n".join("1,2,3,0" for _ in range(1000))
    with pytest.raises(uploads.DatasetTooLarge, match="line"):
        uploads.parse_csv(f"a,b,c,y\n{rows}\n".encode(), "y", max_bytes=4_000)


# --------------------------------------------------------------------------- labels


def test_labels_given_as_a_column_are_taken_as_a_vector(client):
    body = upload(
        client, hostile.npz_of(x=np.zeros((6, 2)), y=np.array([[0], [1], [0], [1], [0], [1]])), "col.npz"
    ).get_json()
    assert body["n_classes"] == 2 and body["class_counts"] == [3, 3]


def test_many_classes_keep_the_info_row_small(client, db):
    response = upload(client, hostile.npz_of(x=np.zeros((3, 2)), y=np.array([0, 1, 65_535])), "wide.npz")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["n_classes"] == 65_536 and body["class_counts"] == []
    assert len(json.dumps(body)) < 1_000


@pytest.mark.parametrize("key", ["²", "٣", "0" * 5000, "1e3", "-1"])
def test_a_relabel_key_that_is_not_a_plain_label_is_422(client, key):
    recipe = small_recipe(**{"dataset.relabel": {key: 0, "1": 1, "2": 2}})
    response = client.post("/v1/jobs", json=recipe)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["errors"][0]["loc"][:1] == ["dataset"]


# --------------------------------------------------------------------------- storage


def test_uploads_are_stored_compressed_in_their_compact_dtype_and_read_back_for_training(client, db):
    from worker import data

    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(200, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, size=200)
    response = upload(client, hostile.npz_of(x=x, y=y), "img.npz")
    assert response.status_code == 201, response.get_json()
    dataset_id = response.get_json()["id"]
    with db.session() as session:
        artifact = session.query(Artifact).filter_by(dataset_id=dataset_id, kind="dataset").one()
        stored = read_all(db, artifact)
    with zipfile.ZipFile(io.BytesIO(stored)) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    with np.load(io.BytesIO(stored)) as npz:
        assert npz["x"].dtype == np.uint8 and npz["y"].dtype == np.uint8
        assert np.array_equal(npz["x"], x) and np.array_equal(npz["y"], y)
    assert len(stored) < x.nbytes  # the float32 + int64 copy stored before was 4.3x the upload
    from core.recipe import DatasetSpec

    spec = DatasetSpec(name=dataset_id)
    arrays = data.load(db, spec)
    assert arrays.x.dtype == np.uint8 and arrays.y.dtype == np.int64
    splits = data.split(arrays, spec, seed=1)
    assert splits.x_train.dtype == np.float32 and splits.x_train.shape[1:] == (8, 8)
    # uint8 inputs are pixels, scaled as the built-in Fashion-MNIST is: the same images train the same
    assert response.get_json()["input_divisor"] == 255.0
    assert np.isclose(splits.x_train.max(), 3 / 255) and splits.x_test.min() == 0.0


def test_datasets_stored_before_as_float32_still_read():
    old = hostile.npz_of(x=np.ones((5, 3), np.float32), y=np.arange(5, dtype=np.int64))
    arrays = uploads.with_int64_labels(uploads.parse_npz(old, max_bytes=None))
    assert arrays.x.dtype == np.float32 and arrays.y.tolist() == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- JSON bodies


def test_a_json_body_is_parsed_once(app, client, monkeypatch):
    calls = []
    loads = app.json.loads
    monkeypatch.setattr(app.json, "loads", lambda s, **kw: calls.append(1) or loads(s, **kw))
    response = client.post("/v1/jobs", json={"dataset": {"name": "iris"}})
    assert response.status_code == 422
    assert len(calls) == 1


# --------------------------------------------------------------------------- a real gunicorn


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Gunicorn:
    """The API as it is deployed: gunicorn, one worker process, on a throwaway SQLite database."""

    def __init__(self, var: Path):
        env = clean_env(TRAINER_VAR_DIR=var, TRAINER_SINGLE_USER="1", TRAINER_LOG_LEVEL="WARNING")
        migrate(env)
        self.proc, self.url = start_gunicorn(
            env, var / "gunicorn.log", ["--workers", "1", "--threads", "2", "--timeout", "120"]
        )
        self.port = int(self.url.rsplit(":", 1)[1])
        self.worker_pid = self.proc.children()[0]

    def stop(self):
        self.proc.stop()


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    server = Gunicorn(tmp_path_factory.mktemp("gunicorn"))
    yield server
    server.stop()


class PeakRss:
    def __init__(self, pid: int):
        self.pid, self.peak = pid, _rss_kb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_kb(self.pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_gunicorn_rss_stays_flat_while_it_refuses_every_bomb(gunicorn):
    cases = hostile.cases()
    with httpx.Client(base_url=gunicorn.url, timeout=120) as http:
        # warm up: the code paths a normal upload and submission import and touch
        for _ in range(2):
            ok = http.post(
                "/v1/datasets", files={"file": ("ok.npz", hostile.npz_of(x=np.zeros((8, 2)), y=np.arange(8) % 2))}
            )
            assert ok.status_code == 201, ok.text
            http.post("/v1/datasets", files={"file": ("ok.csv", b"a,y\n1,0\n2,1\n")}, data={"label_column": "y"})
        time.sleep(0.5)
        before = _rss_kb(gunicorn.worker_pid)
        statuses = {}
        with PeakRss(gunicorn.worker_pid) as peak:
            for case in cases:
                response = http.post("/v1/datasets", files={"file": (case.filename, case.data)}, data=case.form)
                statuses[case.name] = (response.status_code, response.headers.get("content-type"))
        after = _rss_kb(gunicorn.worker_pid)
    wrong = {
        name: got for name, got in statuses.items() if not (400 <= got[0] < 500 and got[1] == "application/problem+json")
    }
    assert not wrong, wrong
    assert (after - before) / 1024 < 100, f"RSS {before / 1024:.0f} -> {after / 1024:.0f} MB"
    assert (peak.peak - before) / 1024 < 100, f"RSS {before / 1024:.0f} MB, peak {peak.peak / 1024:.0f} MB"


def _raw_post(port: int, headers: str, body_parts: list[bytes], terminate: bool) -> bytes:
    """Sends a POST as it is written here and returns what the server answers, up to the end of its headers."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
        try:
            for part in body_parts:
                sock.sendall(part)
            if terminate:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while b"\r\n\r\n" not in answer:
            got = sock.recv(65536)
            if not got:
                break
            answer += got
    return answer


def chunked(body: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [f"{len(body[i : i + size]):x}\r\n".encode() + body[i : i + size] + b"\r\n" for i in range(0, len(body), size)]


def test_a_chunked_body_over_the_limit_is_cut_at_the_limit_with_a_413(gunicorn):
    """1 MiB + 64 KiB sent and the body never terminated: the answer comes without the API waiting for the rest,
    so it read no further than the limit, give or take gunicorn's 1 KiB read-ahead (before, it read on until
    the client ended the body, up to the 64 MiB upload limit)."""
    body = b'{"name": "' + b"x" * (2 * MB) + b'"}'
    answer = _raw_post(
        gunicorn.port,
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        chunked(body[: MB + 64 * 1024]),
        terminate=False,
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"application/problem+json" in answer


def test_a_chunked_body_under_the_limit_is_read_and_validated(gunicorn):
    body = json.dumps({"dataset": {"name": "iris"}, "pad": "x" * 500_000}).encode()
    answer = _raw_post(
        gunicorn.port, "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", chunked(body), terminate=True
    )
    assert answer.startswith(b"HTTP/1.1 422"), answer[:300]


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(gunicorn):
    answer = _raw_post(
        gunicorn.port, f"Content-Type: application/json\r\nContent-Length: {10 * MB}\r\n", [], terminate=False
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
