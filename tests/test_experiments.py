"""Experiments: variants × seeds as child jobs, and the comparison a user reads."""
from __future__ import annotations

import pytest

from tests.support import small_recipe, wait_until


def spec(**extra) -> dict:
    return {"name": "lr", "base": small_recipe(**{"training.epochs": 3}), "repeats": 2, "target_accuracy": 0.5,
            "variants": [{"name": "adam", "overrides": {}},
                         {"name": "sgd", "overrides": {"training.optimizer": {"type": "sgd", "learning_rate": 0.05}}}],
            **extra}


@pytest.mark.worker
def test_an_experiment_runs_every_variant_and_seed_and_compares_them(http, worker):
    response = http.post("/v1/experiments", json=spec())
    assert response.status_code == 202, response.text
    experiment = response.json()
    assert experiment["jobs"] == 4
    first = experiment["comparison"][0]
    assert len(first["jobs"]) == 2
    done = wait_until(lambda: (e := http.get(f"/v1/experiments/{experiment['id']}").json())["finished"] == 4 and e,
                      timeout=240)
    rows = {row["variant"]: row for row in done["comparison"]}
    assert set(rows) == {"adam", "sgd"}
    for row in rows.values():
        assert set(row["jobs"].values()) == {"succeeded"}
        assert row["test_accuracy"]["n"] == 2 and 0 <= row["test_accuracy"]["mean"] <= 1
        assert row["sparsity"]["mean"] == pytest.approx(0.5, abs=0.02)
        assert row["wall_seconds"]["mean"] > 0 and row["gzip_bytes"]["mean"] > 0
        assert row["reached_target"] is not None
    seeds = {http.get(f"/v1/jobs/{job_id}").json()["recipe"]["seed"] for job_id in rows["sgd"]["jobs"]}
    assert seeds == {7, 8}
    plot = wait_until(lambda: (r := http.get(f"/v1/experiments/{experiment['id']}/plots/compare.png")).status_code == 200
                      and r, timeout=30)
    assert plot.content.startswith(b"\x89PNG")
    assert http.delete(f"/v1/experiments/{experiment['id']}").status_code == 204
    assert http.get(f"/v1/experiments/{experiment['id']}").status_code == 404
    assert all(http.get(f"/v1/jobs/{job_id}").status_code == 404 for job_id in rows["adam"]["jobs"])


def test_a_bad_variant_is_a_422_naming_it_and_nothing_is_stored(client):
    before = client.get("/v1/jobs").get_json()["items"]
    bad = spec(variants=[{"name": "ok", "overrides": {}},
                         {"name": "broken", "overrides": {"training.optimizer.type": "lbfgs"}}])
    response = client.post("/v1/experiments", json=bad)
    assert response.status_code == 422
    body = response.get_json()
    assert body["errors"][0]["loc"] == ["variants", 1] and "broken" in body["detail"]
    assert client.get("/v1/jobs").get_json()["items"] == before


def test_cancelling_an_experiment_cancels_its_queued_jobs(client):
    experiment = client.post("/v1/experiments", json=spec(repeats=1)).get_json()
    assert client.post(f"/v1/experiments/{experiment['id']}/cancel").get_json()["cancelled"] >= 1
    table = client.get(f"/v1/experiments/{experiment['id']}").get_json()
    statuses = [status for row in table["comparison"] for status in row["jobs"].values()]
    assert set(statuses) <= {"cancelled", "succeeded", "failed"}
    assert client.get(f"/v1/experiments/{experiment['id']}/plots/compare.png").status_code in (200, 404)
