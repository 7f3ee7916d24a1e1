"""A user's whole path over real HTTP with a real worker: submit, poll, download, verify, delete."""

from __future__ import annotations

import hashlib
import io

import h5py
import numpy as np
import pytest

from tests.support import small_recipe, wait_for

pytestmark = pytest.mark.worker


def kernel_sparsity_from_h5(data: bytes) -> dict[str, float]:
    """Per-layer fraction of exact zeros in each kernel, read with h5py alone."""
    out = {}
    with h5py.File(io.BytesIO(data), "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.endswith("kernel:0"):
                out[name.split("/")[1]] = float(np.mean(obj[()] == 0))

        f["model_weights"].visititems(visit)
    return out


def test_submit_poll_download_h5(http, worker):
    response = http.post("/v1/jobs", json=small_recipe(**{"export.formats": ["h5", "keras"]}))
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["recipe"]["model"]["layers"][0]["name"] == "dense_0"  # defaults filled in

    done = wait_for(http, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert [h["epoch"] for h in done["history"]] == [1, 2, 3, 4, 5]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "sparsity"} <= set(done["history"][-1])
    assert done["progress"]["epoch"] == 5 and done["device"] == "CPU:0"
    result = done["result"]
    assert 0 <= result["test"]["accuracy"] <= 1
    assert result["sparsity"]["overall"] == pytest.approx(0.5, abs=0.02)
    assert set(result["sizes"]) == {"h5", "keras"}

    download = http.get(f"/v1/jobs/{job['id']}/model", params={"format": "h5"})
    assert download.status_code == 200
    assert int(download.headers["Content-Length"]) == len(download.content) == result["sizes"]["h5"]["bytes"]
    digest = hashlib.sha256(download.content).hexdigest()
    assert download.headers["ETag"] == f'"{digest}"'
    assert download.headers["X-Checksum-Sha256"] == digest
    assert "attachment" in download.headers["Content-Disposition"]

    in_file = kernel_sparsity_from_h5(download.content)
    reported = {layer["name"]: layer["sparsity"] for layer in result["sparsity"]["layers"] if "sparsity" in layer}
    assert in_file.keys() == reported.keys() == {"dense_0", "dense_1"}
    for name, value in in_file.items():
        assert value == pytest.approx(reported[name], abs=1e-6)
    zeros = sum(np.mean(v) for v in in_file.values())
    assert zeros > 0

    keras_file = http.get(f"/v1/jobs/{job['id']}/model", params={"format": "keras"})
    assert keras_file.status_code == 200 and keras_file.content[:2] == b"PK"  # a zip, the native format


def test_history_logs_and_delete(http, worker):
    job = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 3})).json()
    wait_for(http, job["id"], {"succeeded"})
    as_json = http.get(f"/v1/jobs/{job['id']}/history").json()["history"]
    assert [row["epoch"] for row in as_json] == [1, 2, 3]
    as_csv = http.get(f"/v1/jobs/{job['id']}/history", params={"format": "csv"})
    assert as_csv.headers["Content-Type"].startswith("text/csv")
    assert as_csv.text.splitlines()[0].startswith("epoch,phase,attempt,loss")
    assert len(as_csv.text.splitlines()) == 4
    logs = http.get(f"/v1/jobs/{job['id']}/logs").text
    assert "epoch 3/3" in logs and "attempt 1" in logs

    assert http.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert http.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert http.get(f"/v1/jobs/{job['id']}/model").status_code == 404


def test_deleted_job_leaves_nothing_in_the_database(http, worker, db):
    from sqlalchemy import func, select

    from core.models import Artifact, ArtifactChunk, EpochRecord, Job, LogLine

    job = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 2})).json()
    wait_for(http, job["id"], {"succeeded"})
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ArtifactChunk)) > 0
    http.delete(f"/v1/jobs/{job['id']}")
    with db.session() as s:
        assert s.get(Job, job["id"]) is None
        for model in (EpochRecord, LogLine, Artifact):
            assert s.scalar(select(func.count()).select_from(model).where(model.job_id == job["id"])) == 0
        orphans = select(func.count()).select_from(ArtifactChunk).where(~ArtifactChunk.artifact_id.in_(select(Artifact.id)))
        assert s.scalar(orphans) == 0


def test_polling_with_etag_returns_304_until_the_job_changes(http, worker):
    job = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 2})).json()
    done = wait_for(http, job["id"], {"succeeded"})
    first = http.get(f"/v1/jobs/{job['id']}")
    etag = first.headers["ETag"]
    again = http.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert done["status"] == "succeeded"
