"""Every supported loss × output head trains through the API and a real worker, and learns.

The recipe language has three losses (``core.recipe.TrainingSpec.loss``): ``sparse_categorical_crossentropy``
with a k-unit softmax, ``binary_crossentropy`` with the seed's one-unit sigmoid, and ``mse``, which on class
labels is a one-unit linear regression onto the label (accuracy is then Keras's binary accuracy, threshold 0.5;
a k-unit mse head on integer labels is not a shape the labels can take). Each head is trained with diagnostics
on and off, as a plain job, as a transfer job's head and as an experiment's child, on an upload whose labels
are (N,) or (N, 1); the test accuracy must beat the majority class on a set that is linearly separable.

The full matrix runs on the embedded backend only (what differs between backends is storage, covered by the
rest of the suite); PostgreSQL + Redis trains the three kinds of head once each.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

from core.recipe import DatasetSpec
from core.uploads import Arrays
from tests.support import small_recipe, wait_for, wait_until

pytestmark = pytest.mark.worker

PAIR = [0, 2]  # the two classes a binary head is trained on, relabelled 0 and 1
HEADS = {
    "sigmoid-1-binary_crossentropy": ({"type": "dense", "units": 1, "activation": "sigmoid"}, "binary_crossentropy", PAIR),
    "softmax-2-sparse_categorical_crossentropy": (
        {"type": "dense", "units": 2, "activation": "softmax"},
        "sparse_categorical_crossentropy",
        PAIR,
    ),
    "softmax-3-sparse_categorical_crossentropy": (
        {"type": "dense", "units": 3, "activation": "softmax"},
        "sparse_categorical_crossentropy",
        None,
    ),
    "linear-1-mse": ({"type": "dense", "units": 1}, "mse", PAIR),
}
MODES = ("plain", "transfer", "experiment")


def separable(seed: int = 0, per_class: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Three tight blobs in 4-d, one per class, far apart: a linear model separates any two of them."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), per_class)
    centers = 3.0 * np.eye(3, 4)
    x = centers[y] + 0.5 * rng.normal(size=(len(y), 4))
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order]


def upload(http, labels_as_column: bool) -> dict:
    x, y = separable()
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y.reshape(-1, 1) if labels_as_column else y)
    shape = "column" if labels_as_column else "vector"
    response = http.post(
        "/v1/datasets",
        files={"file": (f"blobs-{shape}.npz", buffer.getvalue())},
        data={"name": f"blobs, labels as a {shape}"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def recipe(dataset: str, head: str, diagnostics: bool) -> dict:
    layer, loss, classes = HEADS[head]
    return {
        "name": f"{head}-diagnostics-{'on' if diagnostics else 'off'}",
        "dataset": {"name": dataset, "classes": classes, "test_fraction": 0.2, "validation_fraction": 0.1},
        "seed": 3,
        "model": {"input_shape": [4], "layers": [{"type": "dense", "units": 8, "activation": "relu"}, layer]},
        "training": {
            "optimizer": {"type": "adam", "learning_rate": 0.05},
            "loss": loss,
            "epochs": 3,
            "batch_size": 8,
            "diagnostics": diagnostics,
        },
        "export": {"formats": ["h5"]},
    }


def as_transfer(data: dict, base_job_id: str) -> dict:
    """The same head on the base's hidden layer: two epochs frozen at a higher rate (a fresh head starts far off
    on features scaled for three classes), then one fine-tuned."""
    return {
        **data,
        "model": {"input_shape": [4], "layers": [data["model"]["layers"][-1]]},
        "training": {**data["training"], "optimizer": {"type": "adam", "learning_rate": 0.1}},
        "transfer": {
            "base_job_id": base_job_id,
            "reuse": "all_but_output",
            "freeze_epochs": 2,
            "fine_tune_learning_rate": 0.01,
        },
    }


def majority_rate(job: dict) -> float:
    """The share of the largest class in the job's test split, split exactly as the worker splits it."""
    from worker.data import split

    x, y = separable()
    splits = split(Arrays(x, y), DatasetSpec.model_validate(job["recipe"]["dataset"]), job["recipe"]["seed"])
    return float(np.bincount(splits.y_test).max() / len(splits.y_test))


def assert_learned(http, job_id: str) -> dict:
    job = wait_for(http, job_id, {"succeeded", "failed", "cancelled"}, timeout=180)
    where = job["recipe"]["name"]
    assert job["status"] == "succeeded", (where, job["error"], http.get(f"/v1/jobs/{job_id}/logs").text[-1500:])
    epochs = http.get(f"/v1/jobs/{job_id}/diagnostics").json()["epochs"]
    measured = [any("mean_abs_grad" in layer for layer in row["layers"]) for row in epochs]
    assert measured == [job["recipe"]["training"]["diagnostics"]] * len(job["history"]), where
    accuracy, majority = job["result"]["test"]["accuracy"], majority_rate(job)
    assert accuracy > majority, (
        f"{where}: test accuracy {accuracy} is not above the majority rate {majority}",
        job["history"],
    )
    return job


def submit(http, data: dict) -> str:
    response = http.post("/v1/jobs", json=data)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def pairwise() -> list[tuple[str, str, bool, bool]]:
    """(head, mode, diagnostics, labels as a column): the 12 head × mode cells, with diagnostics and the label
    shape alternating so that every pair of the four factors meets at least once (the full product would be
    48 jobs; what each factor can break — the probe, the transfer build, the overrides, the upload parser —
    shows in a pair)."""
    return [
        (head, mode, (i + j) % 2 == 0, (j + i // 2) % 2 == 1) for i, head in enumerate(HEADS) for j, mode in enumerate(MODES)
    ]


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse"])
def test_the_probe_takes_the_loss_fit_minimises_whatever_the_label_shape(loss):
    """(N,) labels against a (N, 1) output: the bare Keras function refuses them (binary_crossentropy) or mixes
    samples (mse); the probe's loss reconciles them as fit does, and equals the loss on (N, 1) labels."""
    from worker.diagnostics import as_compiled
    from worker.tf_env import keras, tf

    y = tf.constant([0.0, 1.0, 1.0, 0.0])
    predicted = tf.constant([[0.2], [0.7], [0.9], [0.4]])
    expected = tf.reduce_mean(keras.losses.get(loss)(tf.reshape(y, (-1, 1)), predicted))
    assert float(as_compiled(loss)(y, predicted)) == pytest.approx(float(expected))
    assert float(as_compiled(loss)(tf.reshape(y, (-1, 1)), predicted)) == pytest.approx(float(expected))


def test_mse_on_class_labels_needs_one_output_unit(client):
    """Labels are one integer per sample: a k-unit mse head could only ever fail in the worker, so it is a 422."""
    response = client.post("/v1/jobs", json=small_recipe(**{"training.loss": "mse"}))  # iris, 3-unit softmax
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["errors"][0]["loc"] == ["model", "layers", -1, "units"] and "needs 1 unit" in body["detail"]


def test_the_cells_cover_every_pair_of_factors():
    cells = pairwise()
    sizes = (len(HEADS), len(MODES), 2, 2)
    for a, b in itertools.combinations(range(4), 2):
        assert len({(cell[a], cell[b]) for cell in cells}) == sizes[a] * sizes[b], (a, b)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_head_learns_with_diagnostics_on_and_off_plain_transfer_and_experiment(http, worker):
    described = {False: upload(http, labels_as_column=False), True: upload(http, labels_as_column=True)}
    assert described[False]["class_counts"] == described[True]["class_counts"] == [30, 30, 30]
    datasets = {column: info["id"] for column, info in described.items()}
    cells = pairwise()

    plain = {cell: submit(http, recipe(datasets[cell[3]], cell[0], cell[2])) for cell in cells if cell[1] == "plain"}
    base = next(job_id for cell, job_id in plain.items() if cell[0] == "softmax-3-sparse_categorical_crossentropy")
    children = {
        recipe("-", head, diagnostics)["name"]: (head, mode, diagnostics, column)
        for head, mode, diagnostics, column in cells
        if mode == "experiment"
    }
    variants = [
        {
            "name": name,
            "overrides": {
                key: part
                for key, part in recipe(datasets[cell[3]], cell[0], cell[2]).items()
                if key in ("dataset", "model", "training")
            },
        }
        for name, cell in children.items()
    ]
    response = http.post(
        "/v1/experiments",
        json={
            "name": "heads",
            "base": recipe(datasets[False], "softmax-3-sparse_categorical_crossentropy", True),
            "variants": variants,
        },
    )
    assert response.status_code == 202, response.text
    experiment = response.json()
    assert_learned(http, base)
    transfer = {
        cell: submit(http, as_transfer(recipe(datasets[cell[3]], cell[0], cell[2]), base))
        for cell in cells
        if cell[1] == "transfer"
    }

    for cell, job_id in {**plain, **transfer}.items():
        job = assert_learned(http, job_id)
        assert job["recipe"]["dataset"]["name"] == datasets[cell[3]]
        if cell[1] == "transfer":
            assert [row["phase"] for row in job["history"]] == ["frozen", "frozen", "fine_tune"]
            assert job["result"]["transfer"]["reused_layers"] == ["dense_0"]
    table = wait_until(
        lambda: (e := http.get(f"/v1/experiments/{experiment['id']}").json())["finished"] == len(children) and e, timeout=180
    )
    assert len(table["comparison"]) == len(children)
    for row in table["comparison"]:
        [job_id] = row["jobs"]
        job = assert_learned(http, job_id)
        assert job["recipe"]["name"].startswith(f"heads/{row['variant']}/")
        assert job["recipe"]["dataset"]["name"] == datasets[children[row["variant"]][3]]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_each_kind_of_head_learns_on_postgres(http, worker):
    datasets = {column: upload(http, labels_as_column=column)["id"] for column in (False, True)}
    submitted = [
        submit(http, recipe(datasets[True], "sigmoid-1-binary_crossentropy", True)),
        submit(http, recipe(datasets[False], "softmax-3-sparse_categorical_crossentropy", True)),
        submit(http, recipe(datasets[True], "linear-1-mse", True)),
    ]
    for job_id in submitted:
        assert_learned(http, job_id)
