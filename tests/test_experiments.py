"""Experiments: variants × seeds as child jobs, and the comparison a user reads."""

from __future__ import annotations

import pytest

from tests.support import small_recipe, wait_until


def spec(**extra) -> dict:
    return {
        "name": "lr",
        "base": small_recipe(**{"training.epochs": 3}),
        "repeats": 2,
        "target_accuracy": 0.5,
        "variants": [
            {"name": "adam", "overrides": {}},
            {"name": "sgd", "overrides": {"training.optimizer": {"type": "sgd", "learning_rate": 0.05}}},
        ],
        **extra,
    }


@pytest.mark.worker
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # test_sweep runs the same path on postgres
def test_an_experiment_runs_every_variant_and_seed_and_compares_them(http, worker):
    response = http.post("/v1/experiments", json=spec())
    assert response.status_code == 202, response.text
    experiment = response.json()
    assert experiment["jobs"] == 4
    first = experiment["comparison"][0]
    assert len(first["jobs"]) == 2
    done = wait_until(
        lambda: (e := http.get(f"/v1/experiments/{experiment['id']}").json())["finished"] == 4 and e, timeout=240
    )
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
    plot = wait_until(
        lambda: (r := http.get(f"/v1/experiments/{experiment['id']}/plots/compare.png")).status_code == 200 and r, timeout=30
    )
    assert plot.content.startswith(b"\x89PNG")
    assert http.delete(f"/v1/experiments/{experiment['id']}").status_code == 204
    assert http.get(f"/v1/experiments/{experiment['id']}").status_code == 404
    assert all(http.get(f"/v1/jobs/{job_id}").status_code == 404 for job_id in rows["adam"]["jobs"])


def test_a_bad_variant_is_a_422_naming_it_and_nothing_is_stored(client):
    before = client.get("/v1/jobs").get_json()["items"]
    bad = spec(
        variants=[{"name": "ok", "overrides": {}}, {"name": "broken", "overrides": {"training.optimizer.type": "lbfgs"}}]
    )
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


def deep(levels: int, leaf=1):
    for _ in range(levels):
        leaf = {"a": leaf}
    return leaf


def with_base(**changes) -> dict:
    base = small_recipe(**{"training.epochs": 3})
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "variant, base, words",
    [
        ({"name": "past-end", "overrides": {"model.layers.5.units": 3}}, None, "past the end of model.layers (2 items)"),
        ({"name": "huge-index", "overrides": {"model.layers.99999999999.units": 3}}, None, "not an index"),
        ({"name": "word-index", "overrides": {"model.layers.first.units": 3}}, None, "not an index"),
        ({"name": "superscript", "overrides": {"model.layers.²": {}}}, None, "not an index"),
        ({"name": "negative", "overrides": {"model.layers.-1": {}}}, None, "not an index"),
        ({"name": "through-int", "overrides": {"training.epochs.value": 3}}, None, "training.epochs is int"),
        ({"name": "through-str", "overrides": {"dataset.name.x": 1}}, None, "dataset.name is str"),
        ({"name": "through-seed", "overrides": {"seed.x.y": 1}}, None, "seed is int"),
        ({"name": "string-seed", "overrides": {}}, with_base(seed="7"), "seed"),
        ({"name": "float-seed", "overrides": {}}, with_base(seed=7.5), "seed"),
        ({"name": "bool-seed", "overrides": {}}, with_base(seed=True), "seed"),
        ({"name": "object-seed", "overrides": {}}, with_base(seed={"a": [1]}), "seed"),
        ({"name": "deep-seed", "overrides": {}}, with_base(seed=deep(600)), "seed"),
        ({"name": "overflowing-seed", "overrides": {"seed": 2**31 - 1}}, None, "seed"),
        ({"name": "deep-base", "overrides": {}}, with_base(description=deep(600)), "description"),
        ({"name": "deep-extra", "overrides": {}}, with_base(extra=deep(900)), "extra"),
        ({"name": "deep-value", "overrides": {"model.layers.0.units": deep(600)}}, None, "units"),
        ({"name": "string-units", "overrides": {"model.layers.0.units": "16"}}, None, "units"),
    ],
)
def test_every_override_failure_is_a_422_naming_the_variant(client, variant, base, words):
    """A bad base fails the first variant; a bad override fails its own variant, after a good one."""
    before = client.get("/v1/jobs").get_json()["items"]
    variants = [variant] if base else [{"name": "fine", "overrides": {}}, variant]
    response = client.post("/v1/experiments", json=spec(repeats=2, variants=variants, **({"base": base} if base else {})))
    assert response.status_code == 422, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["errors"][0]["loc"][:2] == ["variants", len(variants) - 1], body
    assert f"variant {variant['name']!r}" in body["detail"] and words in body["detail"], body["detail"]
    assert client.get("/v1/jobs").get_json()["items"] == before


def test_an_override_may_create_and_remove_keys_and_leaves_the_base_alone():
    from core.experiments import apply_overrides

    base = small_recipe()
    snapshot = repr(base)
    out = apply_overrides(base, {"training.early_stopping.patience": 2, "regularization": None, "model.layers.0.units": 8})
    assert out["training"]["early_stopping"] == {"patience": 2} and "regularization" not in out
    assert out["model"]["layers"][0]["units"] == 8
    assert repr(base) == snapshot


@pytest.mark.parametrize(
    "change, loc",
    [
        ({"repeats": "2"}, ["repeats"]),
        ({"repeats": True}, ["repeats"]),
        ({"repeats": 2.0}, ["repeats"]),
        ({"target_accuracy": "0.5"}, ["target_accuracy"]),
        ({"name": "lr\x00"}, ["name"]),
        ({"description": "a\x00b"}, ["description"]),
        ({"base": {**small_recipe(), "name": "x\x00"}}, ["base", "name"]),
        ({"variants": [{"name": "a\x00", "overrides": {}}]}, ["variants", 0, "name"]),
        ({"variants": [{"name": "a", "overrides": {"seed\x00": 1}}]}, ["variants", 0, "overrides", "seed\x00"]),
        ({"variants": [{"name": 5, "overrides": {}}]}, ["variants", 0, "name"]),
        (
            {"variants": [{"name": "a", "overrides": {"dataset.name": "iris\x00"}}]},
            ["variants", 0, "overrides", "dataset.name"],
        ),
    ],
)
def test_the_experiment_spec_is_strict_and_refuses_nul(client, change, loc):
    response = client.post("/v1/experiments", json=spec(**change))
    assert response.status_code == 422, response.get_data(as_text=True)[:500]
    assert loc in [error["loc"] for error in response.get_json()["errors"]]


def test_an_integer_seed_in_the_base_still_counts_up_per_repeat(client):
    body = client.post("/v1/experiments", json=spec(repeats=3, variants=[{"name": "one", "overrides": {}}]))
    assert body.status_code == 202, body.get_data(as_text=True)
    jobs = body.get_json()["comparison"][0]["jobs"]
    seeds = sorted(client.get(f"/v1/jobs/{job_id}").get_json()["recipe"]["seed"] for job_id in jobs)
    assert seeds == [7, 8, 9]
    client.post(f"/v1/experiments/{body.get_json()['id']}/cancel")
