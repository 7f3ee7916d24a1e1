"""Datasets: the built-ins listed, uploads parsed as data only, and a job trained on an upload."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.support import small_recipe, wait_for


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload(client, data: bytes, filename: str, **form):
    return client.post(
        "/v1/datasets", data={"file": (io.BytesIO(data), filename), **form}, content_type="multipart/form-data"
    )


def test_builtins_are_listed(client):
    items = {item["id"]: item for item in client.get("/v1/datasets").get_json()["items"]}
    assert {"digits", "iris", "wine", "breast_cancer"} <= set(items)
    assert items["digits"]["feature_shape"] == [64] and items["digits"]["n_classes"] == 10


def test_npz_upload_is_described_and_listed(client):
    rng = np.random.default_rng(0)
    response = upload(client, npz_bytes(x=rng.normal(size=(40, 6)), y=rng.integers(0, 2, 40)), "toy.npz", name="toy")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["id"].startswith("ds-") and body["n_samples"] == 40 and body["feature_shape"] == [6]
    listed = {item["id"] for item in client.get("/v1/datasets").get_json()["items"]}
    assert body["id"] in listed


def test_csv_upload_with_label_column(client):
    csv = "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n"
    body = upload(client, csv.encode(), "t.csv", label_column="label").get_json()
    assert body["n_samples"] == 4 and body["feature_shape"] == [2] and body["n_classes"] == 2


@pytest.mark.parametrize(
    "data, filename, form, words",
    [
        (npz_bytes(x=np.array([{"a": 1}], dtype=object), y=np.array([0])), "p.npz", {}, "plain-data"),
        (npz_bytes(x=np.zeros((5, 2)), y=np.zeros(4, dtype=int)), "m.npz", {}, "x has 5 samples but y has 4"),
        (npz_bytes(x=np.zeros((5, 2))), "n.npz", {}, "needs arrays 'x' and 'y'"),
        (npz_bytes(x=np.full((3, 2), np.nan), y=np.zeros(3, dtype=int)), "nan.npz", {}, "NaN"),
        (b"PK\x03\x04truncated", "t.npz", {}, "not a readable .npz"),
        (b"a,b,label\n1,2,0\n3,4\n", "r.csv", {"label_column": "label"}, "line 3 has 2 fields"),
        (b"a,b,label\n1,x,0\n", "s.csv", {"label_column": "label"}, "not a number"),
        (b"a,b\n1,2\n", "l.csv", {"label_column": "label"}, "not in the header"),
        (b"a,b,label\n1,2,0\n", "l.csv", {}, "needs label_column"),
        (b"hello", "x.txt", {}, "unsupported format"),
    ],
)
def test_bad_uploads_are_422_with_the_reason(client, data, filename, form, words):
    response = upload(client, data, filename, **form)
    assert response.status_code == 422, response.get_json()
    assert words in response.get_json()["detail"]


def test_upload_without_file_is_422(client):
    response = client.post("/v1/datasets", data={"name": "x"}, content_type="multipart/form-data")
    assert response.status_code == 422


@pytest.mark.worker
def test_a_job_trains_on_an_uploaded_csv(client, http, worker):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    rows = "\n".join(f"{a:.5f},{b:.5f},{c:.5f},{label}" for (a, b, c), label in zip(x, y))
    dataset = upload(client, f"f1,f2,f3,label\n{rows}\n".encode(), "xor.csv", label_column="label").get_json()
    recipe = small_recipe(
        **{
            "dataset.name": dataset["id"],
            "model.input_shape": [3],
            "model.layers": [
                {"type": "dense", "units": 8, "activation": "relu"},
                {"type": "dense", "units": 2, "activation": "softmax"},
            ],
        }
    )
    job = http.post("/v1/jobs", json=recipe).json()
    done = wait_for(http, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"]["plan"]["test_samples"] == 24
