"""Pruning a model you already have: a Keras model trained elsewhere (here by plain tf_keras in the test process),
uploaded, pruned whole or under a new head, measured before and after, swept over sparsities — through the API,
the CLI and a real worker. Digits (8×8 images, 10 classes) keeps it to seconds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from trainer_client.cli import cli

from core.models import UploadedModel
from core.recipe import Recipe
from tests.support import wait_for, wait_until

pytestmark = pytest.mark.worker
#: The functional CNN takes digits as 8×8 images; the Sequential MLP the 64 features as stored.
DATASET = {
    "sequential": {"name": "digits"},
    "sequential_h5": {"name": "digits"},
    "functional": {"name": "digits", "reshape": [8, 8, 1]},
}


def _keras():
    from worker.tf_env import keras

    return keras


def _digits(shape: tuple[int, ...]):
    """Digits as the service reads them (raw 0..16 values), in the model's input shape."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32).reshape(-1, *shape), bunch.target.astype(np.int64)


def sequential():
    """Digits as the service stores them: 64 features."""
    keras = _keras()
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )


def functional():
    """A small CNN with a residual Add and a Concatenate branch, and a BatchNormalization (left dense)."""
    keras = _keras()
    inputs = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inputs)
    b = keras.layers.Conv2D(8, 3, padding="same", name="conv_b")(a)
    residual = keras.layers.Add(name="residual")([a, b])
    side = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 1, name="conv_side")(residual))
    joined = keras.layers.Concatenate(name="join")([residual, side])
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(joined)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="out")(pooled))


def trained(build, path: Path, epochs: int = 8) -> Path:
    """Trained by hand, as a user would elsewhere: no service involved."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = build()
    x, y = _digits(tuple(model.input_shape[1:]))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    model.save(path)
    return path


def upload(http, path: Path) -> dict:
    with path.open("rb") as fh:
        response = http.post("/v1/models", files={"file": (path.name, fh)})
    assert response.status_code == 201, response.text
    model = wait_until(
        lambda: (m := http.get(f"/v1/models/{response.json()['id']}").json())["status"] != "inspecting" and m, timeout=120
    )
    assert model["status"] == "ready", model
    return model


@pytest.fixture(scope="module")
def http_module(live_api):
    import httpx

    with httpx.Client(base_url=live_api.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("byom")
    return {
        "sequential": trained(sequential, root / "sequential.keras"),
        "functional": trained(functional, root / "functional.keras"),
        "sequential_h5": trained(sequential, root / "sequential.h5", epochs=2),
    }


@pytest.fixture(scope="module")
def models(http_module, worker, files):
    return {name: upload(http_module, path) for name, path in files.items()}


def recipe(model_id: str, reuse: str = "all", sparsity: float = 0.7, kind: str = "sequential", **extra) -> dict:
    data = {
        "name": f"byom-{reuse}",
        "dataset": {**DATASET[kind], "test_fraction": 0.25},
        "seed": 3,
        "transfer": {"base_model_id": model_id, "reuse": reuse, "freeze_epochs": 1},
        "training": {"epochs": 2, "batch_size": 64, "optimizer": {"type": "adam", "learning_rate": 1e-3}},
        "pruning": {"schedule": {"type": "polynomial_decay", "final_sparsity": sparsity, "frequency": 4}},
        "export": {"formats": ["keras", "h5", "tflite"]},
    }
    if reuse == "all_but_output":
        data["model"] = {"layers": [{"type": "dense", "units": 10, "activation": "softmax"}]}
    return {**data, **extra}


def run(http, data: dict) -> dict:
    response = http.post("/v1/jobs", json=data)
    assert response.status_code == 202, response.text
    job = wait_for(http, response.json()["id"], {"succeeded", "failed"}, timeout=240)
    assert job["status"] == "succeeded", (job["error"], http.get(f"/v1/jobs/{job['id']}/logs").text[-3000:])
    return job


def evaluated(path: Path, data: dict) -> dict[str, float]:
    """The uploaded file evaluated here, on the job's own test split (the worker's split function, same seed)."""
    from worker import data as worker_data

    keras = _keras()
    spec = Recipe.model_validate(data)
    splits = worker_data.split(worker_data.load(None, spec.dataset), spec.dataset, spec.seed)
    model = keras.models.load_model(path, compile=False)
    model.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
    return {
        k: float(v)
        for k, v in model.evaluate(splits.x_test, splits.y_test, batch_size=64, verbose=0, return_dict=True).items()
    }


def stored_sha(http, model_id: str) -> str:
    return hashlib.sha256(http.get(f"/v1/models/{model_id}/file").content).hexdigest()


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_an_uploaded_model_is_measured_then_pruned_whole_and_its_bytes_never_change(http, models, files, kind):
    model = models[kind]
    data = recipe(model["id"], kind=kind)
    job = run(http, data)
    result = job["result"]
    shape = [8, 8, 1] if kind == "functional" else [64]
    assert job["recipe"]["model"]["input_shape"] == shape  # from the base, written into the stored recipe
    assert set(result["baseline"]["test"]) == set(result["test"]) == {"loss", "accuracy"}
    mine = evaluated(files[kind], job["recipe"])
    assert result["baseline"]["test"]["accuracy"] == pytest.approx(mine["accuracy"], abs=1e-6)
    assert result["baseline"]["test"]["loss"] == pytest.approx(mine["loss"], rel=1e-4)
    assert result["baseline"]["test"]["accuracy"] > 0.5  # trained (chance is 0.1), measured before any training
    assert result["sparsity"]["overall"] == pytest.approx(0.7, abs=0.01)
    pruned = {layer["name"]: layer for layer in result["sparsity"]["layers"] if layer["pruned"]}
    expected = {"hidden", "out"} if kind == "sequential" else {"conv_a", "conv_b", "conv_side", "out"}
    assert set(pruned) == expected and all(layer["sparsity"] == pytest.approx(0.7, abs=0.02) for layer in pruned.values())
    if kind == "functional":
        assert "bn" in result["sparsity"]["left_dense"]
    assert set(result["sizes"]) == {"keras", "h5", "tflite"}
    assert result["transfer"]["whole"] is True and result["transfer"]["base_model_id"] == model["id"]
    assert stored_sha(http, model["id"]) == model["sha256"] == hashlib.sha256(files[kind].read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["functional", "sequential_h5"])
def test_reuse_all_but_output_puts_a_new_head_on_the_uploaded_model(http, models, kind):
    model = models[kind]
    job = run(http, recipe(model["id"], "all_but_output", kind=kind))
    result = job["result"]
    assert "out" not in result["transfer"]["reused_layers"]
    assert [h["phase"] for h in job["history"]] == ["frozen", "fine_tune"]
    assert "head_dense_0" in result["sparsity"]["pruned_layers"]
    assert set(result["baseline"]["test"]) == {"loss", "accuracy"}  # the base's own output fits digits too
    assert stored_sha(http, model["id"]) == model["sha256"]


def test_a_dataset_that_does_not_fit_the_model_is_a_422_naming_the_mismatch(http, models):
    model = models["sequential"]
    wrong_input = http.post("/v1/jobs", json=recipe(model["id"], dataset={"name": "iris"}))
    assert wrong_input.status_code == 422
    assert wrong_input.json()["errors"][0]["loc"] == ["dataset"]
    assert "[4]" in wrong_input.json()["detail"] and "[64]" in wrong_input.json()["detail"]
    three_classes = {"name": "digits", "classes": [0, 1, 2]}  # 10 outputs, 3 classes
    wrong_output = http.post("/v1/jobs", json=recipe(model["id"], dataset=three_classes))
    assert wrong_output.status_code == 422
    assert "10 units" in wrong_output.json()["detail"] and "3 classes" in wrong_output.json()["detail"]
    conv_head = {"layers": [{"type": "conv2d", "filters": 2, "kernel_size": [3, 3]}]}  # on 32 features
    head = http.post("/v1/jobs", json=recipe(model["id"], "all_but_output", model=conv_head))
    assert head.status_code == 422 and head.json()["errors"][0]["loc"] == ["model", "layers", 0]
    no_head = http.post("/v1/jobs", json=recipe(model["id"], "all", model={"layers": [{"type": "dense", "units": 10}]}))
    assert no_head.status_code == 422 and "leave model.layers empty" in no_head.json()["detail"]


def test_a_model_not_ready_or_not_yours_cannot_be_a_base(http, db, models, files):
    fresh = upload(http, files["sequential_h5"])
    with db.session() as session:
        session.get(UploadedModel, fresh["id"]).status = "inspecting"
    busy = http.post("/v1/jobs", json=recipe(fresh["id"]))
    assert busy.status_code == 409 and "still inspecting" in busy.json()["detail"]  # will be usable: try again
    with db.session() as session:
        row = session.get(UploadedModel, fresh["id"])
        row.status, row.reason = "rejected", "layer 'x' (Lambda) runs code"
    refused = http.post("/v1/jobs", json=recipe(fresh["id"]))
    assert refused.status_code == 422  # never usable
    assert refused.json()["errors"][0]["loc"] == ["transfer", "base_model_id"] and "Lambda" in refused.json()["detail"]
    unknown = http.post("/v1/jobs", json=recipe("f" * 32))
    assert unknown.status_code == 422 and "no uploaded model" in unknown.json()["detail"]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # the CLI's upload-and-sweep; nothing SQL-specific
def test_trainer_sweep_uploads_a_keras_file_sweeps_it_and_prints_the_table(live_api, http, models, files):
    """The CLI end to end: the local .keras file is uploaded first, pruned to each sparsity, the table printed."""
    result = CliRunner().invoke(
        cli,
        ["--url", live_api.url, "sweep", str(files["sequential"]), "--sparsity", "0.5,0.9", "--dataset", "digits"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    assert "Uploading sequential.keras" in result.stderr and "jobs" in result.stderr
    assert "dense base model: test accuracy" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith(("0.500", "0.900"))]
    assert len(lines) == 2, result.stdout
    experiment_id = result.stderr.split("Sweep ", 1)[1].split(":", 1)[0]
    table = http.get(f"/v1/experiments/{experiment_id}").json()
    rows = {row["variant"]: row for row in table["comparison"]}
    assert set(rows) == {"final_sparsity=0.5", "final_sparsity=0.9"}
    for target, row in zip((0.5, 0.9), rows.values()):
        assert row["sparsity"]["mean"] == pytest.approx(target, abs=0.01)
        assert row["baseline_accuracy"]["mean"] > 0.8 and row["test_accuracy"]["n"] == 1
        assert row["tflite_bytes"]["mean"] > 0 and row["gzip_bytes"]["mean"] > 0
    assert rows["final_sparsity=0.9"]["gzip_bytes"]["mean"] < rows["final_sparsity=0.5"]["gzip_bytes"]["mean"]
    plot = wait_until(lambda: (r := http.get(table["links"]["tradeoff_plot"])).status_code == 200 and r, timeout=30)
    assert plot.content.startswith(b"\x89PNG")
