"""Admission's training-memory estimate: what it counts, how it scales, and the 422 that names the layer.

The estimate against TensorFlow's measured peak is in ``bench/footprint.py`` (no timing or memory here).
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest

from core import footprint
from core.datasets import BUILTIN, DatasetInfo
from core.errors import RecipeError
from core.plan import plan_for
from core.recipe import Recipe
from core.selection import describe
from core.settings import ROOT, Settings
from core.transfer import TransferPlan, keras_plan
from tests.support import small_recipe

DEFAULT_LIMIT = Settings.__dataclass_fields__["max_training_bytes"].default
MNIST_LIKE = DatasetInfo("ds-mnist", 60_000, (784,), 10, source="upload")


def bomb(batch_size: int = 4096, units: int = 4096) -> dict:
    """The issue's recipe: a wide dense layer on the last axis of a reshaped image, a large batch."""
    return {
        "name": "bomb",
        "dataset": {"name": "ds-mnist"},
        "model": {
            "input_shape": [784],
            "layers": [
                {"type": "reshape", "target_shape": [28, 28, 1]},
                {"type": "conv2d", "filters": 16, "padding": "same", "activation": "relu"},
                {"type": "dense", "units": units, "activation": "relu"},
                {"type": "global_average_pooling2d"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
        },
        "training": {"batch_size": batch_size, "epochs": 1},
    }


def estimate(recipe_json: dict, info: DatasetInfo | None = None, tp: TransferPlan | None = None):
    recipe = Recipe.model_validate(recipe_json)
    info = describe(info or BUILTIN[recipe.dataset.name], recipe.dataset)
    start = tp.output_shape if tp else None
    params = recipe.model.param_count(start) + (sum(k.params for k in tp.reused) if tp else 0)
    return footprint.estimate(recipe, info, plan_for(recipe, info), params, tp)


def with_training(recipe: dict, **training) -> dict:
    return {**recipe, "training": {**recipe.get("training", {}), **training}}


# --- the bomb ----------------------------------------------------------------------------------------------


def test_the_issues_bomb_is_tens_of_gib_with_few_parameters():
    fp = estimate(bomb(), MNIST_LIKE)
    recipe = Recipe.model_validate(bomb())
    assert recipe.model.param_count() < 250_000
    assert fp.rows == 4096
    assert fp.largest.name == "dense_2" and fp.largest.type == "dense" and fp.largest.loc == ("model", "layers", 2)
    assert fp.largest.activation_bytes == 28 * 28 * 4096 * 4096 * 4  # per-sample output × rows × float32
    assert fp.total_bytes > 20 * 2**30


def test_the_bomb_is_refused_naming_the_layer_the_limit_and_batch_size():
    fp = estimate(bomb(), MNIST_LIKE)
    with pytest.raises(RecipeError) as caught:
        footprint.admit(fp, DEFAULT_LIMIT)
    error = caught.value.errors[0]
    assert error["loc"] == ["model", "layers", 2]
    for words in (
        "'dense_2' (dense)",
        footprint.gib(fp.total_bytes),
        footprint.gib(DEFAULT_LIMIT),
        footprint.gib(fp.largest.activation_bytes),
        "batch_size",
        "4096 rows",
    ):
        assert words in error["msg"], error["msg"]


def test_a_small_batch_brings_the_same_network_under_the_limit():
    assert estimate(bomb(batch_size=4096), MNIST_LIKE).total_bytes > DEFAULT_LIMIT
    footprint.admit(estimate(with_training(bomb(), batch_size=32, diagnostics=False), MNIST_LIKE), DEFAULT_LIMIT)


def test_the_same_units_on_a_flat_input_are_cheap():
    """What makes the bomb is the layer applied per pixel, not its width."""
    flat = bomb()
    flat["model"]["layers"] = [
        {"type": "dense", "units": 4096, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]
    assert estimate(flat, MNIST_LIKE).activation_bytes < estimate(bomb(), MNIST_LIKE).activation_bytes / 100


# --- how it scales -----------------------------------------------------------------------------------------


def test_the_estimate_grows_linearly_with_batch_size():
    totals = [estimate(with_training(bomb(), batch_size=b, diagnostics=False), MNIST_LIKE) for b in (512, 1024, 2048, 4096)]
    steps = [b.total_bytes - a.total_bytes for a, b in zip(totals, totals[1:])]
    assert steps[1] == 2 * steps[0] and steps[2] == 4 * steps[0] and steps[0] > 0
    assert [t.activation_bytes for t in totals] == [totals[0].activation_bytes * k for k in (1, 2, 4, 8)]
    assert len({(t.weights_bytes, t.dataset_bytes, t.runtime_bytes) for t in totals}) == 1


def test_a_batch_larger_than_the_training_set_holds_the_training_set():
    recipe = small_recipe(**{"training.diagnostics": False})
    n_train = plan_for(Recipe.model_validate(recipe), BUILTIN["iris"]).train_samples
    huge = estimate(small_recipe(**{"training.batch_size": 65536, "training.diagnostics": False}))
    exact = estimate(small_recipe(**{"training.batch_size": n_train, "training.diagnostics": False}))
    assert huge.rows == n_train and huge.total_bytes == exact.total_bytes


def test_diagnostics_probe_counts_its_256_rows_when_batches_are_smaller():
    digits = json.loads((ROOT / "examples" / "recipes" / "optimizer-adam.json").read_text())
    on = estimate(with_training(digits, batch_size=16, diagnostics=True))
    off = estimate(with_training(digits, batch_size=16, diagnostics=False))
    assert (on.rows, off.rows) == (footprint.PROBE_ROWS, 16)
    assert on.activation_bytes == off.activation_bytes * footprint.PROBE_ROWS // 16


def test_the_dataset_is_counted_from_an_uploads_info():
    small, large = (DatasetInfo("ds-x", n, (784,), 10, source="upload") for n in (10_000, 20_000))
    a, b = (
        estimate(with_training(bomb(batch_size=32), diagnostics=False), small),
        estimate(with_training(bomb(batch_size=32), diagnostics=False), large),
    )
    per_sample = 784 * 4 * footprint.DATASET_COPIES + footprint.LABEL_BYTES
    assert a.dataset_bytes == 10_000 * per_sample and b.dataset_bytes == 20_000 * per_sample


# --- what it counts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "optimizer, slots",
    [
        ({"type": "sgd"}, 0),
        ({"type": "sgd", "momentum": 0.9}, 1),
        ({"type": "sgd", "momentum": 0.9, "nesterov": True}, 1),
        ({"type": "adagrad"}, 1),
        ({"type": "rmsprop"}, 1),
        ({"type": "rmsprop", "momentum": 0.9}, 2),
        ({"type": "adam"}, 2),
        ({"type": "adam", "amsgrad": True}, 3),
        ({"type": "nadam"}, 2),
        ({"type": "adamax"}, 2),
        ({"type": "adamw"}, 2),
    ],
)
def test_optimizer_slots_are_counted_per_parameter(optimizer, slots):
    recipe = small_recipe(**{"training.optimizer": optimizer})
    params = Recipe.model_validate(recipe).model.param_count()
    fp = estimate(recipe)
    assert footprint.optimizer_slots(Recipe.model_validate(recipe)) == slots
    assert fp.weights_bytes == params * 4 * (2 + slots)  # weights, gradients, slots


def test_pruned_layers_add_a_mask_and_a_masked_kernel():
    pruned = estimate(small_recipe())
    dense = small_recipe()
    dense.pop("pruning")
    only_first = estimate(small_recipe(**{"pruning.layers": ["dense_0"]}))
    params = Recipe.model_validate(dense).model.param_count()
    assert estimate(dense).pruning_bytes == 0
    assert pruned.pruning_bytes == 2 * 4 * params
    assert only_first.pruning_bytes == 2 * 4 * (4 * 16 + 16)


def test_post_training_threshold_needs_no_masks():
    recipe = small_recipe(pruning={"post_training_threshold": 0.1})
    assert estimate(recipe).pruning_bytes == 0


@pytest.mark.parametrize(
    "layer, in_shape, per_sample",
    [
        ({"type": "dense", "units": 8}, (5, 5, 3), 5 * 5 * 8),  # on the last axis: per pixel
        ({"type": "dense", "units": 8, "activation": "leaky_relu"}, (4,), 16),  # + a LeakyReLU layer
        ({"type": "dense", "units": 8, "activation": "gelu"}, (4,), 24),
        ({"type": "conv2d", "filters": 4, "padding": "same"}, (6, 6, 1), 6 * 6 * 4),
        ({"type": "max_pooling2d"}, (6, 6, 4), 3 * 3 * 4),
        ({"type": "global_average_pooling2d"}, (6, 6, 4), 4),
        ({"type": "flatten"}, (6, 6, 4), 0),
        ({"type": "reshape", "target_shape": [144]}, (6, 6, 4), 0),
        ({"type": "batch_normalization"}, (10,), 20),
        ({"type": "dropout", "rate": 0.5}, (10,), 20),
        ({"type": "alpha_dropout", "rate": 0.1}, (10,), 20),
        ({"type": "activation", "activation": "swish"}, (10,), 20),
        ({"type": "activation", "activation": "relu"}, (10,), 10),
        ({"type": "prelu"}, (10,), 30),
        ({"type": "rrelu"}, (10,), 30),
        ({"type": "elu"}, (10,), 10),
        ({"type": "leaky_relu"}, (10,), 10),
    ],
)
def test_every_layer_type_has_an_activation_size(layer, in_shape, per_sample):
    from pydantic import TypeAdapter

    from core.layers import Layer

    spec = TypeAdapter(Layer).validate_python(layer)
    assert spec.activation_size(in_shape) == per_sample


def test_the_largest_layer_is_the_widest_kept_output():
    cnn = json.loads((ROOT / "examples" / "recipes" / "cnn-digits-pruned.json").read_text())
    fp = estimate(cnn)
    assert fp.largest.name == "conv2d_0" and fp.largest.activation_bytes == 8 * 8 * 16 * fp.rows * 4
    assert [c.name for c in fp.layers] == [
        layer["name"] if "name" in layer else f"{layer['type']}_{i}" for i, layer in enumerate(cnn["model"]["layers"])
    ]


def test_an_autoencoders_decoder_is_counted():
    recipe = small_recipe(
        kind="autoencoder",
        pruning=None,
        model={
            "input_shape": [4],
            "layers": [{"type": "dense", "units": 2048, "activation": "relu"}, {"type": "dense", "units": 2}],
        },
    )
    fp = estimate(recipe)
    assert [c.name for c in fp.layers] == ["dense_0", "dense_1", "decoder_dense_0", "decoder_output"]
    assert fp.largest.name in ("dense_0", "decoder_dense_0") and fp.largest.loc[:2] == ("model", "layers")


def test_a_transfer_jobs_reused_layers_are_counted_and_can_be_named():
    base = Recipe.model_validate(bomb(batch_size=32))
    reused = [layer for layer in keras_plan(base) if layer.recipe_index < 3]
    tp = TransferPlan("0" * 32, (784,), reused, [layer.name for layer in reused], 1e-4)
    head = {
        **bomb(),
        "transfer": {"base_job_id": "0" * 32},
        "model": {
            "input_shape": [784],
            "layers": [{"type": "global_average_pooling2d"}, {"type": "dense", "units": 10, "activation": "softmax"}],
        },
    }
    fp = estimate(head, MNIST_LIKE, tp)
    assert [c.name for c in fp.layers][:3] == ["reshape_0", "conv2d_1", "dense_2"]
    assert fp.largest.name == "dense_2" and fp.largest.loc == ("transfer", "reuse")
    assert fp.weights_bytes == (sum(k.params for k in reused) + 4096 * 10 + 10) * 4 * 4
    with pytest.raises(RecipeError) as caught:
        footprint.admit(fp, DEFAULT_LIMIT)
    assert caught.value.errors[0]["loc"] == ["transfer", "reuse"] and "'dense_2'" in caught.value.detail


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "recipes").glob("*.json")), ids=lambda p: p.stem)
def test_every_gallery_recipe_is_admitted_under_the_default_limit(path):
    fp = estimate(json.loads(path.read_text()))
    footprint.admit(fp, DEFAULT_LIMIT)
    assert fp.total_bytes < DEFAULT_LIMIT / 2  # with room to spare


# --- through the API ---------------------------------------------------------------------------------------


def _upload_784(client) -> str:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((300, 784), dtype=np.float32), y=np.arange(300) % 10)
    response = client.post(
        "/v1/datasets", data={"file": (io.BytesIO(buffer.getvalue()), "mnist-like.npz")}, content_type="multipart/form-data"
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_the_bomb_is_a_422_naming_the_layer_and_nothing_is_queued(client):
    recipe = bomb()
    recipe["dataset"]["name"] = _upload_784(client)
    before = client.get("/v1/jobs").get_json()["items"]
    response = client.post("/v1/jobs", json=recipe)
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["errors"] == [{"loc": ["model", "layers", 2], "msg": body["errors"][0]["msg"]}]
    assert "'dense_2' (dense)" in body["detail"] and "batch_size" in body["detail"] and "limit" in body["detail"]
    assert client.get("/v1/jobs").get_json()["items"] == before


def test_a_job_states_its_estimate_and_a_lower_limit_refuses_it(client, backend):
    accepted = client.post("/v1/jobs", json=small_recipe())
    assert accepted.status_code == 202, accepted.get_json()
    estimated = accepted.get_json()["progress"]["plan"]["estimated_training_bytes"]
    assert estimated == estimate(small_recipe()).total_bytes
    client.post(f"/v1/jobs/{accepted.get_json()['id']}/cancel")

    from service.app import create_app

    strict = create_app(dataclasses.replace(backend, max_training_bytes=estimated - 1)).test_client()
    refused = strict.post("/v1/jobs", json=small_recipe())
    assert refused.status_code == 422 and "limit" in refused.get_json()["detail"]


def test_each_experiment_child_is_admitted_and_the_bomb_variant_is_named(client):
    dataset = _upload_784(client)
    base = with_training(bomb(batch_size=32), diagnostics=False)
    base["dataset"]["name"] = dataset
    spec = {
        "name": "batch",
        "base": base,
        "repeats": 1,
        "variants": [
            {"name": "small", "overrides": {}},
            {"name": "huge", "overrides": {"training.batch_size": 4096, "training.diagnostics": True}},
        ],
    }
    response = client.post("/v1/experiments", json=spec)
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["errors"][0]["loc"] == ["variants", 1]
    assert "'huge'" in body["detail"] and "'dense_2' (dense)" in body["detail"]


def test_the_estimate_is_the_sum_of_its_parts():
    fp = estimate(bomb(), MNIST_LIKE)
    assert fp.total_bytes == (
        fp.weights_bytes + fp.pruning_bytes + fp.activation_bytes + fp.dataset_bytes + fp.runtime_bytes
    )
    assert fp.activation_bytes > sum(c.activation_bytes for c in fp.layers)  # + inputs and backprop
    assert (footprint.gib(3 * 2**30), footprint.gib(5 * 2**20)) == ("3.00 GiB", "5.0 MiB")
