"""Structured pruning: whole units and filters removed while training, the model shrunk, through the worker and
the API (real TensorFlow, tiny digits models); the recipes it refuses and why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.recipe import Recipe
from tests.support import Recorder, tflite_predict, wait_for

STRUCTURED = {"final_fraction": 0.5, "frequency": 5}
EXAMPLES_DIR = Path(__file__).parent.parent / "examples" / "structured"


def digits_mlp(**pruning) -> dict:
    return {
        "name": "digits-structured",
        "dataset": {"name": "digits", "limit": 300},
        "seed": 3,
        "model": {
            "input_shape": [64],
            "layers": [
                {"type": "dense", "units": 24, "use_bias": False},
                {"type": "batch_normalization"},
                {"type": "activation", "activation": "relu"},
                {"type": "dense", "units": 16, "activation": "sigmoid"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
        },
        "training": {"optimizer": {"type": "adam", "learning_rate": 0.01}, "epochs": 4, "batch_size": 32},
        "pruning": pruning or {"structured": STRUCTURED},
        "export": {"formats": ["keras"]},
    }


def digits_cnn(**pruning) -> dict:
    return {
        "name": "digits-cnn-structured",
        "dataset": {"name": "digits", "limit": 300, "reshape": [8, 8, 1]},
        "seed": 3,
        "model": {
            "input_shape": [8, 8, 1],
            "layers": [
                {"type": "conv2d", "filters": 8, "padding": "same", "activation": "relu"},
                {"type": "batch_normalization"},
                {"type": "max_pooling2d"},
                {"type": "conv2d", "filters": 6, "padding": "same", "activation": "relu"},
                {"type": "flatten"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
        },
        "training": {"optimizer": {"type": "adam", "learning_rate": 0.01}, "epochs": 4, "batch_size": 32},
        "pruning": pruning or {"structured": STRUCTURED},
        "export": {"formats": ["keras"]},
    }


def train_here(data: dict):
    """The worker's training function on its own, with the plan admission would make."""
    from core import structured
    from core.datasets import BUILTIN
    from core.plan import plan_for
    from core.selection import describe
    from worker import data as data_mod
    from worker.training import StructuredPhase, train

    recipe = Recipe.model_validate(data)
    splits = data_mod.split(data_mod.load(None, recipe.dataset), recipe.dataset, recipe.seed)
    plan = plan_for(recipe, describe(BUILTIN[recipe.dataset.name], recipe.dataset))
    assert plan.structured_end_step is not None and plan.structured_epochs is not None
    phase = StructuredPhase(structured.pruned_names(recipe), plan.structured_end_step, plan.structured_epochs)
    recorder = Recorder()
    outcome = train(recipe, splits, recorder, end_step=plan.pruning_end_step, structured_phase=phase)
    return outcome, recorder, splits


def test_training_removes_half_the_units_of_every_hidden_layer_and_the_shrunk_model_matches_the_masked_one():
    data = digits_mlp()
    data["dataset"]["standardize"] = True  # a Normalization layer first: rebuilt with its statistics
    outcome, recorder, splits = train_here(data)
    report = outcome.structured
    assert report.units == {"dense_0": (24, 12), "dense_3": (16, 8)}
    assert report.max_difference <= 1e-5
    model = outcome.model
    assert [model.get_layer(n).units for n in ("dense_0", "dense_3", "dense_4")] == [12, 8, 10]
    assert model.get_layer("batch_normalization_1").gamma.shape == (12,)
    assert report.params_after == model.count_params() < report.params_before
    assert np.asarray(model.get_layer("standardize").get_config()["mean"]).size == 64
    assert len(recorder.epochs) == 4 and 0 <= outcome.test["accuracy"] <= 1


def test_a_shrunk_cnn_loses_filters_through_batch_norm_pooling_and_flatten_and_exports_in_every_format(tmp_path):
    import zipfile

    import tf_keras

    from core.recipe import ExportSpec
    from worker.export import strip_and_export
    from worker.tf_env import tf

    data = digits_cnn()
    data["model"]["layers"][3]["activation"] = {"type": "leaky_relu", "alpha": 0.2}  # a LeakyReLU layer after it
    outcome, _, splits = train_here(data)
    assert outcome.structured.units == {"conv2d_0": (8, 4), "conv2d_3": (6, 3)}
    assert outcome.structured.max_difference <= 1e-5
    assert outcome.model.get_layer("dense_5").kernel.shape == (4 * 4 * 3, 10)

    files = strip_and_export(outcome.model, ExportSpec(formats=["h5", "keras", "savedmodel", "tflite"]), tmp_path)
    x = splits.x_test[:64].astype(np.float32)
    expected = outcome.model.predict(x, verbose=0)
    for fmt in ("h5", "keras"):
        loaded = tf_keras.models.load_model(files[fmt])  # plain tf_keras, no custom objects
        assert loaded.count_params() == outcome.structured.params_after
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
    with zipfile.ZipFile(files["savedmodel"]) as archive:
        archive.extractall(tmp_path / "sm")
    served = tf.saved_model.load(str(tmp_path / "sm" / "savedmodel")).signatures["serving_default"]
    np.testing.assert_allclose(list(served(tf.constant(x)).values())[0].numpy(), expected, rtol=1e-4, atol=1e-5)
    lite = tflite_predict(files["tflite"], x)
    np.testing.assert_allclose(lite, expected, rtol=1e-3, atol=1e-4)


def test_flops_are_counted_per_layer_without_tensorflow():
    """The gallery CNN on 28×28×1, by hand: a multiply-add is 2 FLOPs, only dense and conv2d kernels count."""
    from core import structured

    recipe = Recipe.model_validate(json.loads((EXAMPLES_DIR / "cnn-dense.json").read_text()))
    assert structured.flops(recipe.all_layers(), (28, 28, 1)) == {
        "conv2d_0": 2 * 28 * 28 * 3 * 3 * 1 * 32,
        "conv2d_2": 2 * 14 * 14 * 3 * 3 * 32 * 64,
        "dense_5": 2 * 7 * 7 * 64 * 128,
        "dense_6": 2 * 128 * 10,
    }
    dense_on_rows = Recipe.model_validate(
        {
            **json.loads((EXAMPLES_DIR / "mlp-dense.json").read_text()),
            "model": {
                "input_shape": [28, 28],
                "layers": [{"type": "dense", "units": 5}, {"type": "flatten"}, {"type": "dense", "units": 10}],
            },
        }
    )
    assert structured.flops(dense_on_rows.all_layers(), (28, 28)) == {"dense_0": 2 * 28 * 28 * 5, "dense_2": 2 * 140 * 10}


# -- through the API ---------------------------------------------------------------------------------------


def submit(http, data: dict) -> dict:
    response = http.post("/v1/jobs", json=data)
    assert response.status_code == 202, response.text
    done = wait_for(http, response.json()["id"], {"succeeded", "failed"}, timeout=300)
    assert done["status"] == "succeeded", (done["error"], http.get(f"/v1/jobs/{done['id']}/logs").text[-3000:])
    return done


@pytest.mark.worker
def test_a_structured_job_reports_fewer_parameters_and_flops_and_its_download_loads_with_plain_tf_keras(
    http, worker, tmp_path
):
    import tf_keras

    job = submit(http, digits_cnn())
    result = job["result"]
    shrunk = result["structured"]
    assert shrunk["params_after"] < shrunk["params_before"]
    assert shrunk["flops_after"] < shrunk["flops_before"]
    assert result["flops"]["total"] == shrunk["flops_after"]
    # conv 8→4 on 8×8×1: 2·64·9·1·4; conv 6→3 on 4×4×4: 2·16·9·4·3; dense 48→10
    assert result["flops"]["layers"] == {"conv2d_0": 4608, "conv2d_3": 3456, "dense_5": 960}
    assert {(layer["name"], layer["units"], layer["kept"]) for layer in shrunk["layers"]} == {
        ("conv2d_0", 8, 4),
        ("conv2d_3", 6, 3),
    }
    path = tmp_path / "model.keras"
    path.write_bytes(http.get(f"/v1/jobs/{job['id']}/model", params={"format": "keras"}).content)
    model = tf_keras.models.load_model(path)  # no custom objects
    assert model.count_params() == result["params"]["total"] == shrunk["params_after"]
    assert model.get_layer("conv2d_0").filters == 4
    assert job["progress"]["plan"]["structured_layers"] == ["conv2d_0", "conv2d_3"]


@pytest.mark.worker
def test_structured_then_unstructured_pruning_then_int8_export(http, worker, tmp_path):
    from worker.tf_env import tf

    data = digits_mlp(
        structured={**STRUCTURED, "epochs": 2},
        schedule={"type": "polynomial_decay", "final_sparsity": 0.5, "frequency": 5},
    )
    data["export"] = {"formats": ["keras", "tflite"], "tflite_options": {"sparsity": True, "dynamic_range_int8": True}}
    job = submit(http, data)
    result = job["result"]
    assert [h["phase"] for h in job["history"]] == ["structured", "structured", "unstructured", "unstructured"]
    assert result["structured"]["params_after"] == result["params"]["total"]
    assert result["sparsity"]["overall"] == pytest.approx(0.5, abs=0.02)
    assert result["sparsity"]["pruned_layers"] == ["dense_0", "dense_3", "dense_4"]
    path = tmp_path / "model.tflite"
    path.write_bytes(http.get(f"/v1/jobs/{job['id']}/model", params={"format": "tflite"}).content)
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    assert interpreter.get_input_details()[0]["shape"].tolist() == [1, 64]
    assert np.isfinite(result["test"]["accuracy"])


# -- what is refused ----------------------------------------------------------------------------------------


def with_layers(layers: list[dict], **structured) -> dict:
    data = digits_mlp(structured={**STRUCTURED, **structured})
    data["model"]["layers"] = layers
    return data


REFUSED = [
    (digits_mlp(structured={**STRUCTURED, "layers": ["dense_4"]}), ["pruning", "structured", "layers", 0], "output layer"),
    (
        digits_mlp(structured={**STRUCTURED, "layers": ["activation_2"]}),
        ["pruning", "structured", "layers", 0],
        "only dense units and conv2d filters",
    ),
    (digits_mlp(structured={**STRUCTURED, "layers": ["nope"]}), ["pruning", "structured", "layers", 0], "not a layer"),
    (
        with_layers(
            [{"type": "dense", "units": 1}, {"type": "dense", "units": 10, "activation": "softmax"}], final_fraction=0.6
        ),
        ["pruning", "structured", "final_fraction"],
        "would leave none",
    ),
    (
        with_layers(
            [
                {"type": "dense", "units": 16},
                {"type": "reshape", "target_shape": [4, 4]},
                {"type": "flatten"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ]
        ),
        ["pruning", "structured", "layers", 0],
        "mixes its units",
    ),
    (
        {
            **digits_cnn(),
            "model": {
                "input_shape": [8, 8, 1],
                "layers": [
                    {"type": "conv2d", "filters": 4},
                    {"type": "batch_normalization", "axis": [1, 2]},
                    {"type": "flatten"},
                    {"type": "dense", "units": 10, "activation": "softmax"},
                ],
            },
        },
        ["pruning", "structured", "layers", 0],
        "normalizes over axis",
    ),
    (
        digits_mlp(structured={**STRUCTURED, "epochs": 4}, schedule={"type": "polynomial_decay", "final_sparsity": 0.5}),
        ["pruning", "structured", "epochs"],
        "must leave epochs",
    ),
    (
        {**digits_mlp(), "training": {"epochs": 4, "early_stopping": {"patience": 1}}},
        ["training", "early_stopping"],
        "run its schedule to the end",
    ),
    (digits_mlp(structured={**STRUCTURED, "frequency": 10_000}), ["pruning", "structured", "end_step"], "first mask update"),
]


@pytest.mark.parametrize("data, loc, words", REFUSED, ids=[r[2] for r in REFUSED])
def test_recipes_structured_pruning_cannot_do_are_refused_naming_the_field(client, data, loc, words):
    response = client.post("/v1/jobs", json=data)
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert any(e["loc"] == loc for e in body["errors"]), body["errors"]
    assert words in body["detail"], body["detail"]


SCHEMA_REFUSED = [
    ({"structured": {**STRUCTURED}, "post_training_threshold": 0.5}, "post_training_threshold is the baseline"),
    (
        {"structured": {**STRUCTURED}, "schedule": {"type": "polynomial_decay", "final_sparsity": 0.5}},
        "give structured.epochs",
    ),
    ({"structured": {**STRUCTURED, "epochs": 2}}, "drop it"),
    ({"structured": {**STRUCTURED}, "layers": ["dense_0"]}, "pruning.structured.layers"),
    ({"structured": {**STRUCTURED, "final_fraction": 1.0}}, "less than 1"),
    ({"structured": {**STRUCTURED, "norm": "l3"}}, "'l1' or 'l2'"),
]


@pytest.mark.parametrize("pruning, words", SCHEMA_REFUSED, ids=[r[1] for r in SCHEMA_REFUSED])
def test_pruning_combinations_that_make_no_sense_are_refused(client, pruning, words):
    response = client.post("/v1/jobs", json=digits_mlp(**pruning))
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert all(e["loc"][:1] == ["pruning"] for e in body["errors"]), body["errors"]
    assert words in body["detail"], body["detail"]


EXAMPLES = sorted(EXAMPLES_DIR.glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_comparison_recipes_are_admissible_and_structured_ones_halve_the_flops(path):
    """examples/structured/ trains on Fashion-MNIST, too slow for the suite: checked here as admission checks it."""
    from core import structured
    from core.datasets import BUILTIN
    from core.plan import plan_for
    from core.selection import describe

    recipe = Recipe.model_validate(json.loads(path.read_text()))
    structured.check(recipe)
    plan = plan_for(recipe, describe(BUILTIN["fashion_mnist"], recipe.dataset))
    spec = recipe.pruning.structured if recipe.pruning else None
    layers, start = recipe.all_layers(), tuple(recipe.model.input_shape)
    before = sum(structured.flops(layers, start).values())
    if spec is None:
        assert plan.structured_end_step is None
        return
    after = sum(structured.flops(structured.shrunk_layers(layers, structured.kept_units(recipe, spec)), start).values())
    assert before / 4 < after < before / 2 + before / 10  # halving both sides of a hidden kernel: about ¼…½
    assert plan.structured_end_step is not None and plan.train_samples == 10_000
