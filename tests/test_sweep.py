"""A sparsity sweep in one request: one dotted path and its values, expanded to variants × seeds, answered by
a table (target, reached, accuracy, sizes) and a tradeoff plot."""

from __future__ import annotations

import pytest

from tests.support import small_recipe, wait_until

PATH = "pruning.schedule.final_sparsity"


def sweep_spec(values: list, **extra) -> dict:
    base = small_recipe(**{"training.epochs": 3, "export.formats": ["h5", "tflite"]})
    return {"name": "sparsity", "base": base, "sweep": {PATH: values}, **extra}


@pytest.mark.worker
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # the table and plot are the point, not SQL
def test_a_sweep_over_a_recipe_answers_a_table_per_sparsity_and_a_tradeoff_plot(http, worker):
    response = http.post("/v1/experiments", json=sweep_spec([0.3, 0.8], repeats=2))
    assert response.status_code == 202, response.text
    experiment = response.json()
    assert experiment["jobs"] == 4
    assert [row["variant"] for row in experiment["comparison"]] == ["final_sparsity=0.3", "final_sparsity=0.8"]
    done = wait_until(
        lambda: (e := http.get(f"/v1/experiments/{experiment['id']}").json())["finished"] == 4 and e, timeout=300
    )
    rows = {row["variant"]: row for row in done["comparison"]}
    for target, name in ((0.3, "final_sparsity=0.3"), (0.8, "final_sparsity=0.8")):
        row = rows[name]
        assert set(row["jobs"].values()) == {"succeeded"}
        assert row["target_sparsity"] == target
        assert row["sparsity"]["mean"] == pytest.approx(target, abs=0.02)  # reached, read back from the files
        assert row["test_accuracy"]["n"] == 2 and 0 <= row["test_accuracy"]["mean"] <= 1
        assert row["gzip_bytes"]["mean"] > 0
        assert row["tflite_format"] == "tflite" and row["tflite_bytes"]["mean"] > 0  # no inference report: the file
        assert row["tflite_latency_ms"] is None and row["baseline_accuracy"] is None  # nothing measured, no base
    # more zeros compress better: the sweep's point
    assert rows["final_sparsity=0.8"]["gzip_bytes"]["mean"] < rows["final_sparsity=0.3"]["gzip_bytes"]["mean"]
    seeds = sorted(http.get(f"/v1/jobs/{job_id}").json()["recipe"]["seed"] for job_id in rows["final_sparsity=0.8"]["jobs"])
    assert seeds == [7, 8]
    assert done["links"]["tradeoff_plot"] == f"/v1/experiments/{experiment['id']}/plots/tradeoff.png"
    plot = wait_until(lambda: (r := http.get(done["links"]["tradeoff_plot"])).status_code == 200 and r, timeout=30)
    assert plot.content.startswith(b"\x89PNG") and plot.headers["Content-Type"] == "image/png"
    assert http.delete(f"/v1/experiments/{experiment['id']}").status_code == 204
    assert http.get(done["links"]["tradeoff_plot"]).status_code == 404


def test_a_swept_value_the_recipe_refuses_is_a_422_naming_the_value_and_nothing_is_stored(client):
    before = client.get("/v1/jobs").get_json()["items"]
    response = client.post("/v1/experiments", json=sweep_spec([0.5, 1.5]))
    assert response.status_code == 422
    body = response.get_json()
    assert body["errors"][0]["loc"] == ["sweep", PATH, 1]
    assert f"{PATH}=1.5" in body["detail"] and "less than 1" in body["detail"]
    assert client.get("/v1/jobs").get_json()["items"] == before


@pytest.mark.parametrize(
    "sweep, loc, says",
    [
        ({"pruning.schedule.final_sparsit": [0.5]}, ["sweep", "pruning.schedule.final_sparsit"], "not a field"),
        ({"pruning.schedule.final_sparsity": [0.5, 0.5]}, ["sweep", PATH, 1], "named like an earlier"),
    ],
)
def test_a_sweep_path_the_base_does_not_have_or_a_repeated_value_is_a_422(client, sweep, loc, says):
    response = client.post("/v1/experiments", json={**sweep_spec([0.5]), "sweep": sweep})
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["errors"][0]["loc"] == loc and says in body["detail"]


def test_a_default_field_of_the_base_can_be_swept(client):
    response = client.post("/v1/experiments", json={**sweep_spec([0.5]), "sweep": {"training.batch_size": [8, 16]}})
    assert response.status_code == 202, response.get_json()  # training.batch_size is in the recipe, given or not
    assert [row["variant"] for row in response.get_json()["comparison"]] == ["batch_size=8", "batch_size=16"]
    client.post(f"/v1/experiments/{response.get_json()['id']}/cancel")


@pytest.mark.parametrize(
    "change, says",
    [
        ({"variants": [{"name": "a", "overrides": {}}]}, "exactly one"),
        ({"sweep": None}, "exactly one"),
        ({"sweep": {PATH: [0.5], "training.epochs": [1]}}, "at most 1"),
        ({"sweep": {PATH: [round(0.01 * i, 2) for i in range(21)]}}, "1 to 20 values"),
        ({"sweep": {PATH: []}}, "1 to 20 values"),
    ],
)
def test_a_sweep_is_one_path_instead_of_variants_and_bounded(client, change, says):
    response = client.post("/v1/experiments", json={**sweep_spec([0.5]), **change})
    assert response.status_code == 422
    assert says in response.get_json()["detail"], response.get_json()
