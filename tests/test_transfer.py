"""Reusing what was learned: transfer from a finished job, autoencoder pretraining, through the API."""

from __future__ import annotations

import hashlib
import json

import pytest

from core.settings import ROOT
from tests.support import wait_for

pytestmark = pytest.mark.worker
# Small digits recipes (the story itself, examples/transfer/, trains on Fashion-MNIST: too slow for the suite)
STORY = ROOT / "tests" / "transfer_digits"


def recipe(name: str, **changes) -> dict:
    data = json.loads((STORY / f"{name}.json").read_text())
    data["training"]["epochs"] = changes.pop("epochs", 3)
    for key, value in changes.items():
        data["transfer"][key] = value
    return data


def train(http, data: dict) -> dict:
    response = http.post("/v1/jobs", json=data)
    assert response.status_code == 202, response.text
    done = wait_for(http, response.json()["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", (done["error"], http.get(f"/v1/jobs/{done['id']}/logs").text[-2000:])
    return done


@pytest.fixture(scope="module")
def model_a(http_module, worker):
    return train(http_module, recipe("1-model-A"))


@pytest.fixture(scope="module")
def autoencoder(http_module, worker):
    return train(http_module, recipe("4-autoencoder"))


@pytest.fixture(scope="module")
def http_module(live_api):
    import httpx

    with httpx.Client(base_url=live_api.url, timeout=30) as client:
        yield client


def sha(http, job_id: str) -> str:
    return hashlib.sha256(http.get(f"/v1/jobs/{job_id}/model", params={"format": "keras"}).content).hexdigest()


def test_b_on_a_freezes_then_fine_tunes_and_leaves_a_untouched(http, model_a):
    before = sha(http, model_a["id"])
    job = train(http, recipe("3-model-B-on-A", base_job_id=model_a["id"], freeze_epochs=2, epochs=4))
    assert [(h["epoch"], h["phase"]) for h in job["history"]] == [
        (1, "frozen"),
        (2, "frozen"),
        (3, "fine_tune"),
        (4, "fine_tune"),
    ]
    transfer = job["result"]["transfer"]
    assert transfer["reused_layers"] == ["standardize", "dense_0", "dense_1"]
    sums = transfer["checksums"]
    for layer in ("dense_0", "dense_1"):
        assert sums["base"][layer] == sums["frozen"][layer]  # bit-identical through phase 1
        assert sums["frozen"][layer] != sums["fine_tune"][layer]  # moved in phase 2
    assert job["history"][2]["learning_rate"] == pytest.approx(1e-4)
    assert sha(http, model_a["id"]) == before  # the base's stored model never changes


def test_unfreezing_only_the_top_layer_keeps_the_bottom_one(http, model_a):
    job = train(http, recipe("3-model-B-on-A", base_job_id=model_a["id"], freeze_epochs=1, unfreeze=1, epochs=2))
    sums = job["result"]["transfer"]["checksums"]
    assert sums["fine_tune"]["dense_0"] == sums["base"]["dense_0"]
    assert sums["fine_tune"]["dense_1"] != sums["base"]["dense_1"]


def test_a_transfer_job_may_prune_the_reused_layers_again(http, model_a):
    data = recipe("3-model-B-on-A", base_job_id=model_a["id"], freeze_epochs=0, epochs=3)
    data["pruning"] = {"schedule": {"type": "polynomial_decay", "final_sparsity": 0.5, "frequency": 1}}
    job = train(http, data)
    layers = {layer["name"]: layer for layer in job["result"]["sparsity"]["layers"]}
    assert layers["dense_0"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert layers["head_dense_0"]["sparsity"] == pytest.approx(0.5, abs=0.05)


def test_autoencoder_trains_on_inputs_and_its_encoder_is_a_base(http, autoencoder):
    assert autoencoder["recipe"]["training"]["loss"] == "mse"
    assert set(autoencoder["result"]["test"]) == {"loss"}
    layers = [layer["name"] for layer in autoencoder["result"]["sparsity"]["layers"]]
    assert layers[-2:] == ["decoder_dense_0", "decoder_output"]
    job = train(http, recipe("5-model-B-on-autoencoder", base_job_id=autoencoder["id"], freeze_epochs=1, epochs=2))
    assert job["result"]["transfer"]["reused_layers"] == ["standardize", "dense_0", "dense_1"]
    assert 0 <= job["result"]["test"]["accuracy"] <= 1


@pytest.mark.parametrize(
    "change, loc, words",
    [
        ({"base_job_id": "0" * 32}, ["transfer", "base_job_id"], "no job"),
        ({"reuse": 9}, ["transfer", "reuse"], "has 3 layers"),
        ({"reuse": "encoder"}, ["transfer", "reuse"], "autoencoder"),
        ({"unfreeze": 5}, ["transfer", "unfreeze"], "cannot unfreeze 5"),
    ],
)
def test_bad_transfers_are_422_with_the_reason(http, model_a, change, loc, words):
    data = recipe("3-model-B-on-A", base_job_id=model_a["id"])
    data["transfer"].update(change)
    response = http.post("/v1/jobs", json=data)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"][0]["loc"] == loc and words in body["detail"]


def test_head_that_does_not_fit_the_base_output_is_422(http, model_a):
    data = recipe("3-model-B-on-A", base_job_id=model_a["id"])
    data["model"]["layers"] = [{"type": "conv2d", "filters": 2}, {"type": "dense", "units": 2}]
    response = http.post("/v1/jobs", json=data)
    assert response.status_code == 422 and "reused layers output [50]" in response.json()["detail"]


def test_a_base_that_has_not_succeeded_is_422(http, model_a):
    queued = http.post("/v1/jobs", json=recipe("1-model-A", epochs=200)).json()
    http.post(f"/v1/jobs/{queued['id']}/cancel")
    data = recipe("3-model-B-on-A", base_job_id=queued["id"])
    response = http.post("/v1/jobs", json=data)
    assert response.status_code == 422 and "only a succeeded job" in response.json()["detail"]


def test_another_owners_job_is_not_a_base(backend, model_a):
    from dataclasses import replace

    from service.app import create_app

    app = create_app(replace(backend, single_user=False, api_tokens="stranger-token:stranger"))
    data = recipe("3-model-B-on-A", base_job_id=model_a["id"])
    response = app.test_client().post("/v1/jobs", json=data, headers={"Authorization": "Bearer stranger-token"})
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["loc"] == ["transfer", "base_job_id"]
    assert "no job" in response.get_json()["detail"]
