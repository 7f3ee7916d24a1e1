"""Uploading a Keras model: stored as sent, checked without running any of its code, inspected by a real worker.

Stock models (Sequential, functional with a residual Add and a Concatenate, BatchNormalization, depthwise and
separable convolutions, a nested model) become ``ready`` with the shapes and parameter counts tf_keras itself
reports; hostile ones (a Lambda, custom classes and objects, zip bombs, truncated or mislabelled files) are a 4xx
or ``rejected``, naming the layer and its class, and a Lambda's code never runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from dataclasses import replace

import pytest

from core import model_store
from core.errors import ModelError, ModelRefused
from core.model_inspect import check_config
from core.models import Job, UploadedModel
from tests import model_files as files
from tests.support import start_worker, wait_until

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def worker(backend, tmp_path_factory):
    """A worker of this module's own that kills an inspection after 20 s and re-sends one after 5 s: on SQLite a
    forked child can hang in its first ``sqlite3.connect`` (a parent thread held SQLite's process-wide mutex at the
    fork), and this is the recovery the service relies on (hard time limit, then the reconciler), kept short."""
    proc = start_worker(
        backend,
        tmp_path_factory.mktemp("inspector") / "worker.log",
        TRAINER_INSPECT_TIMEOUT_S="20",
        TRAINER_REDISPATCH_AFTER_S="5",
    )
    yield proc
    proc.stop()


def upload(client, data: bytes, filename: str):
    return client.post("/v1/models", data={"file": (io.BytesIO(data), filename)}, content_type="multipart/form-data")


def settled(client, model_id: str, timeout: float = 180) -> dict:
    """The model once its inspection has ended."""

    def done():
        body = client.get(f"/v1/models/{model_id}").get_json()
        return body if body["status"] != "inspecting" else None

    return wait_until(done, timeout=timeout, interval=0.2)


def uploaded(client, data: bytes, filename: str) -> dict:
    response = upload(client, data, filename)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["status"] == "inspecting"
    return settled(client, response.get_json()["id"])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, files.Built]:
    where = tmp_path_factory.mktemp("models")
    return {
        "mlp.keras": files.save(files.mlp(), where / "mlp.keras"),
        "mlp.h5": files.save(files.mlp(), where / "mlp.h5"),
        "cnn.keras": files.save(files.residual_cnn(), where / "cnn.keras"),
        "cnn.h5": files.save(files.residual_cnn(), where / "cnn.h5"),
        "bn.h5": files.save(files.batch_norm(), where / "bn.h5"),
        "separable.keras": files.save(files.separable(), where / "separable.keras"),
        "nested.keras": files.save(files.nested(), where / "nested.keras"),
    }


# --------------------------------------------------------------------------- stock models become ready


@pytest.mark.parametrize("name", ["mlp.keras", "mlp.h5", "cnn.keras", "cnn.h5", "bn.h5", "separable.keras", "nested.keras"])
def test_a_stock_model_is_ready_with_the_shapes_and_params_keras_reports(client, worker, built, name):
    model = built[name]
    data = model.path.read_bytes()
    body = uploaded(client, data, name)
    assert body["status"] == "ready", body["reason"]
    inspection = body["inspection"]
    assert inspection["params"] == model.params
    assert sum(layer["params"] for layer in inspection["layers"]) == model.params
    assert inspection["input_shape"] == model.input_shape and inspection["output_shape"] == model.output_shape
    assert [(layer["name"], layer["class_name"]) for layer in inspection["layers"]] == model.layers
    assert inspection["functional"] == name.startswith("cnn")
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["size_bytes"] == len(data)
    assert body["format"] == name.rsplit(".", 1)[1]


def test_prunable_says_which_layers_tf_mot_prunes(client, worker, built):
    layers = {
        layer["name"]: layer
        for layer in uploaded(client, built["separable.keras"].path.read_bytes(), "s.keras")["inspection"]["layers"]
    }
    assert {name: layer["prunable"] for name, layer in layers.items() if name in ("depthwise", "separable", "head")} == {
        "depthwise": False,  # TF-MOT 0.8 registers DepthwiseConv2D with no weights to prune
        "separable": True,  # its pointwise kernel
        "head": True,
    }
    bn = uploaded(client, built["bn.h5"].path.read_bytes(), "bn.h5")["inspection"]["layers"]
    assert [(layer["class_name"], layer["prunable"]) for layer in bn] == [
        ("Dense", True),
        ("BatchNormalization", False),
        ("Activation", False),
        ("Dense", True),
    ]
    assert bn[1]["output_shape"] == [8]


def test_the_file_comes_back_byte_for_byte_and_counts_in_the_quota(client, worker, built):
    data = built["cnn.keras"].path.read_bytes()
    before = client.get("/v1/usage").get_json()["uploaded_models_bytes"]
    body = uploaded(client, data, "cnn.keras")
    response = client.get(f"/v1/models/{body['id']}/file")
    assert response.status_code == 200 and response.data == data
    assert hashlib.sha256(response.data).hexdigest() == body["sha256"] == response.headers["X-Checksum-Sha256"]
    assert client.get("/v1/usage").get_json()["uploaded_models_bytes"] == before + len(data)
    assert body["id"] in [item["id"] for item in client.get("/v1/models").get_json()["items"]]
    assert client.delete(f"/v1/models/{body['id']}").status_code == 204
    assert client.get(f"/v1/models/{body['id']}").status_code == 404
    assert client.get(f"/v1/models/{body['id']}/file").status_code == 404
    assert client.get("/v1/usage").get_json()["uploaded_models_bytes"] == before


def test_another_owner_gets_404_for_my_model(app, client, worker, built, backend):
    from service.app import create_app

    body = uploaded(client, built["mlp.keras"].path.read_bytes(), "mlp.keras")
    other = create_app(replace(backend, single_user=False, api_tokens="tok-bob:bob")).test_client()
    bob = {"Authorization": "Bearer tok-bob"}
    for url in (f"/v1/models/{body['id']}", f"/v1/models/{body['id']}/file"):
        assert other.get(url, headers=bob).status_code == 404
    assert other.delete(f"/v1/models/{body['id']}", headers=bob).status_code == 404
    assert body["id"] not in [m["id"] for m in other.get("/v1/models", headers=bob).get_json()["items"]]


def test_delete_is_409_while_a_queued_job_starts_from_it(client, db, worker, built):
    body = uploaded(client, built["mlp.keras"].path.read_bytes(), "mlp.keras")
    job_id = uuid.uuid4().hex
    with db.session() as session:
        session.add(
            Job(
                id=job_id,
                owner="default",
                name="from-upload",
                status="queued",
                recipe={"transfer": {"base_model_id": body["id"]}},
            )
        )
    with db.session() as session:
        assert model_store.in_use(session, body["id"])
    response = client.delete(f"/v1/models/{body['id']}")
    assert response.status_code == 409 and job_id in response.get_json()["detail"]
    with db.session() as session:
        session.get(Job, job_id).status = "cancelled"
    with db.session() as session:
        assert not model_store.in_use(session, body["id"])
    assert client.delete(f"/v1/models/{body['id']}").status_code == 204


# --------------------------------------------------------------------------- refused by the API (no TensorFlow there)


def _rename_class(old: str, new: str, module: str | None = None):
    def edit(config):
        for layer in config["config"]["layers"]:
            if layer["class_name"] == old:
                layer["class_name"] = new
                if module is not None:
                    layer["module"] = module

    return edit


def test_refused_keras_files_name_the_layer_and_its_class(client, built, tmp_path):
    mlp = built["mlp.keras"].path
    lambda_file = files.save(files.with_lambda(tmp_path / "ran"), tmp_path / "l.keras").path.read_bytes()
    (tmp_path / "ran").unlink()  # building the model called it once
    cases = {
        "lambda": (lambda_file, ["'sneaky'", "Lambda"]),
        "custom layer": (
            files.save(files.with_custom_layer(), tmp_path / "c.keras").path.read_bytes(),
            ["'doubler'", "Doubler"],
        ),
        "custom activation": (
            files.save(files.with_custom_activation(), tmp_path / "a.keras").path.read_bytes(),
            ["'cubed'", "cube"],
        ),
        "custom initializer": (
            files.save(files.with_custom_initializer(), tmp_path / "i.keras").path.read_bytes(),
            ["'sevens'", "Sevens"],
        ),
        "unknown class": (files.with_config(mlp, _rename_class("Dropout", "MultiHeadAttention")), ["MultiHeadAttention"]),
        "outside module": (
            files.with_config(mlp, _rename_class("Dropout", "Dropout", module="evil.layers")),
            ["Dropout", "evil.layers"],
        ),
    }
    for case, (data, named) in cases.items():
        response = upload(client, data, f"{case}.keras")
        body = response.get_json()
        assert response.status_code == 422 and body["title"] == "Model refused", (case, body)
        assert all(word in body["detail"] for word in named), (case, body["detail"])
    assert not (tmp_path / "ran").exists()


def test_files_that_are_not_models_are_4xx(client, built):
    keras_bytes = built["mlp.keras"].path.read_bytes()
    h5_bytes = built["mlp.h5"].path.read_bytes()
    cases = {
        "random.keras": (bytes(range(256)) * 64, 422, "no zip end record"),
        "random.h5": (bytes(range(256)) * 64, 422, "HDF5"),
        "truncated.keras": (keras_bytes[: len(keras_bytes) // 2], 422, "no zip end record"),
        "empty.keras": (b"", 422, "empty"),
        "bomb.keras": (files.config_bomb(built["mlp.keras"].path), 413, "config.json declares 67,108,864 bytes"),
        "lying.keras": (files.lying_config(built["mlp.keras"].path), 422, "Bad CRC"),
        "weights-bomb.keras": (files.weights_bomb(built["mlp.keras"].path), 413, "members declare 8,589,9"),
        "missing.keras": (
            files.rezip({k: v for k, v in files.members(built["mlp.keras"].path).items() if k != "model.weights.h5"}),
            422,
            "missing",
        ),
        "extra.keras": (
            files.rezip({**files.members(built["mlp.keras"].path), "payload.py": b"import os"}),
            422,
            "payload.py",
        ),
        "bad-json.keras": (
            files.rezip({**files.members(built["mlp.keras"].path), "config.json": b"{not json"}),
            422,
            "not valid JSON",
        ),
        "deep.keras": (
            files.rezip({**files.members(built["mlp.keras"].path), "config.json": b"[" * 100_000 + b"]" * 100_000}),
            422,
            "deep",
        ),
        "model.pkl": (h5_bytes, 422, ".keras or a legacy .h5"),
    }
    for name, (data, status, says) in cases.items():
        response = upload(client, data, name)
        body = response.get_json()
        assert response.status_code == status and response.mimetype == "application/problem+json", (name, body)
        assert says in body["detail"], (name, body["detail"])


def test_an_upload_over_the_limit_is_413(backend):
    from service.app import create_app

    small = create_app(replace(backend, max_model_bytes=50_000)).test_client()
    response = upload(small, b"\x89HDF\r\n\x1a\n" + b"\0" * 50_000, "big.h5")
    assert response.status_code == 413 and "50,000" in response.get_json()["detail"]
    response = upload(small, b"\x89HDF\r\n\x1a\n" + b"\0" * 200_000, "bigger.h5")  # past the body's own limit
    assert response.status_code == 413


# --------------------------------------------------------------------------- refused by the worker's inspection


def test_an_h5_lambda_is_rejected_without_running_its_code(client, worker, tmp_path):
    from worker.tf_env import keras

    sentinel = tmp_path / "lambda-ran"
    model = files.save(files.with_lambda(sentinel), tmp_path / "lambda.h5")
    sentinel.unlink(missing_ok=True)  # building it called the lambda once
    body = uploaded(client, model.path.read_bytes(), "lambda.h5")
    assert body["status"] == "rejected" and "'sneaky'" in body["reason"] and "Lambda" in body["reason"], body
    assert not sentinel.exists()
    # the sentinel would have told: loading the file as Keras does without the check runs the code
    keras.models.load_model(model.path, compile=False, safe_mode=False)
    assert sentinel.exists()


@pytest.mark.parametrize(
    "case",
    ["custom layer", "weights only", "truncated", "signature only", "mismatched weights"],
)
def test_an_h5_or_keras_file_that_passes_the_api_but_not_the_worker_is_rejected_with_a_reason(
    client, worker, built, tmp_path, case
):
    from worker.tf_env import keras

    if case == "custom layer":
        data, name, says = files.save(files.with_custom_layer(), tmp_path / "c.h5").path.read_bytes(), "c.h5", "Doubler"
    elif case == "weights only":
        model = files.mlp()
        model.save_weights(tmp_path / "w.h5")
        data, name, says = (tmp_path / "w.h5").read_bytes(), "w.h5", "no model_config"
    elif case == "truncated":
        whole = built["cnn.h5"].path.read_bytes()
        data, name, says = whole[: len(whole) // 2], "t.h5", ""
    elif case == "signature only":
        data, name, says = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 16, "s.h5", "HDF5"
    else:
        other = keras.Sequential([keras.Input((20,)), keras.layers.Dense(5), keras.layers.Dense(3)])
        other.save(tmp_path / "other.keras")
        mixed = {
            **files.members(built["mlp.keras"].path),
            "model.weights.h5": files.members(tmp_path / "other.keras")["model.weights.h5"],
        }
        data, name, says = files.rezip(mixed), "mixed.keras", "could not load"
    body = uploaded(client, data, name)
    assert body["status"] == "rejected" and body["inspection"] is None, body
    assert says in body["reason"], body["reason"]
    assert client.get(f"/v1/models/{body['id']}/file").data == data


def test_the_worker_survives_the_hostile_files_and_still_inspects(client, worker, built):
    """After every rejection above, the same worker still answers."""
    assert worker.running()
    assert uploaded(client, built["mlp.h5"].path.read_bytes(), "again.h5")["status"] == "ready"


# --------------------------------------------------------------------------- the config walk, on plain JSON


def test_the_walk_refuses_code_anywhere_in_a_layer():
    layer = {
        "class_name": "Dense",
        "config": {"name": "d", "units": 2, "kernel_initializer": {"class_name": "__lambda__", "config": {"code": "x"}}},
    }
    with pytest.raises(ModelRefused, match="'d' \\(Dense\\)"):
        check_config({"class_name": "Sequential", "config": {"name": "s", "layers": [layer]}})
    with pytest.raises(ModelRefused, match="'x'.*activation 'evil>boom'"):
        check_config(
            {
                "class_name": "Sequential",
                "config": {"layers": [{"class_name": "Activation", "config": {"name": "x", "activation": "evil>boom"}}]},
            }
        )
    with pytest.raises(ModelRefused, match="subclassed"):
        check_config({"class_name": "Sequential", "module": "mine", "registered_name": "me>Net", "config": {"layers": []}})
    with pytest.raises(ModelError, match="not a Keras model"):
        check_config([1, 2])


def test_models_nested_too_deep_are_refused():
    config: dict = {
        "class_name": "Sequential",
        "config": {"name": "m0", "layers": [{"class_name": "Dense", "config": {"name": "d"}}]},
    }
    for depth in range(1, 6):
        config = {"class_name": "Sequential", "config": {"name": f"m{depth}", "layers": [config]}}
    with pytest.raises(ModelRefused, match="nested more than 3 deep"):
        check_config(config)


# --------------------------------------------------------------------------- no inspection is lost


def test_the_reconciler_resends_an_unstarted_inspection_and_rejects_one_that_kept_dying(db, backend, built):
    from datetime import timedelta

    from core.models import utcnow

    model = model_store.store_upload(
        db, "reconcile-owner", backend, io.BytesIO(built["mlp.keras"].path.read_bytes()), "m.keras"
    )
    later = utcnow() + timedelta(seconds=backend.redispatch_after_s + 1)
    with db.session() as session:
        assert model.id in model_store.reconcile(session, backend, now=later)["redispatch"]
        assert model.id not in model_store.reconcile(session, backend, now=later)["redispatch"]  # just sent
    start = later
    for attempt in range(1, backend.max_attempts + 1):
        with db.session() as session:
            assert model_store.claim_inspection(session, model.id, "w:1", backend, now=start) == attempt
        start += timedelta(seconds=backend.inspect_timeout_s + backend.redispatch_after_s + 1)
        with db.session() as session:
            found = model_store.reconcile(session, backend, now=start)
        assert (model.id in found["rejected"]) == (attempt == backend.max_attempts)
    with db.session() as session:
        row = session.get(UploadedModel, model.id)
        assert row.status == "rejected" and "did not finish in 3 attempts" in row.reason
        model_store.delete_model(session, model.id, "reconcile-owner")


def test_the_json_in_the_openapi_document_lists_the_allowed_layers(client):
    doc = client.get("/openapi.json").get_json()
    post = doc["paths"]["/v1/models"]["post"]
    assert (
        "DepthwiseConv2D" in post["description"]
        and "Lambda" not in post["description"].split("Layers allowed:")[1].split(".")[0]
    )
    assert json.dumps(doc["components"]["schemas"]["ModelInspection"])


# --------------------------------------------------------------------------- the API's memory


def test_gunicorn_rss_stays_flat_while_it_refuses_model_bombs(tmp_path_factory, built):
    """A real gunicorn worker: a config.json that inflates to 64 MiB, one that lies about its size, weights that
    declare 8 GiB, JSON nested 100,000 deep — each a 4xx, the process's memory flat (read from /proc)."""
    import httpx

    from tests.test_upload_limits import Gunicorn, PeakRss, _rss_kb

    server = Gunicorn(tmp_path_factory.mktemp("gunicorn-models"))
    mlp = built["mlp.keras"].path
    hostile = {
        "bomb.keras": files.config_bomb(mlp),
        "lying.keras": files.lying_config(mlp),
        "weights-bomb.keras": files.weights_bomb(mlp),
        "deep.keras": files.rezip({**files.members(mlp), "config.json": b"[" * 100_000 + b"]" * 100_000}),
    }
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for _ in range(2):  # warm up the paths a good upload takes
                assert http.post("/v1/models", files={"file": ("ok.keras", mlp.read_bytes())}).status_code == 201
            time.sleep(0.5)
            before = _rss_kb(server.worker_pid)
            with PeakRss(server.worker_pid) as peak:
                statuses = {
                    name: http.post("/v1/models", files={"file": (name, data)}).status_code for name, data in hostile.items()
                }
            after = _rss_kb(server.worker_pid)
    finally:
        server.stop()
    assert all(400 <= status < 500 for status in statuses.values()), statuses
    print(f"gunicorn RSS before {before / 1024:.1f} MiB, peak {peak.peak / 1024:.1f} MiB, after {after / 1024:.1f} MiB")
    assert (peak.peak - before) / 1024 < 100, f"RSS {before / 1024:.0f} MB, peak {peak.peak / 1024:.0f} MB"
    assert (after - before) / 1024 < 100, f"RSS {before / 1024:.0f} -> {after / 1024:.0f} MB"
