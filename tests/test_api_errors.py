"""What a client gets when it asks for something wrong: problem+json with the field named, and nothing stored."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.models import Job
from tests.support import small_recipe

PROBLEM = "application/problem+json"


def job_count(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Job))


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


@pytest.mark.parametrize(
    "overrides, loc",
    [
        ({"model.layers": [{"type": "dense", "units": 0}]}, ["model", "layers", 0, "units"]),
        ({"model.layers": [{"type": "convolution"}]}, ["model", "layers", 0]),
        ({"model.layers": [{"type": "dense", "units": 3, "activation": "sigmoidd"}]},
         ["model", "layers", 0, "activation"]),
        ({"training.optimizer": {"type": "adam", "learning_rate": -1}}, ["training", "optimizer", "learning_rate"]),
        ({"training.optimizer": {"type": "lbfgs"}}, ["training", "optimizer"]),
        ({"training.epochs": 0}, ["training", "epochs"]),
        ({"regularization": {"l1": -0.1}}, ["regularization", "l1"]),
        ({"pruning.schedule.final_sparsity": 1.0}, ["pruning", "schedule", "final_sparsity"]),
        ({"dataset.test_fraction": 1.5}, ["dataset", "test_fraction"]),
        ({"seed": "forty-two"}, ["seed"]),
        ({"export.formats": ["onnx"]}, ["export", "formats", 0]),
        ({"unknown_field": 1}, ["unknown_field"]),
    ],
)
def test_invalid_recipe_is_422_naming_the_field(client, db, overrides, loc):
    before = job_count(db)
    body = assert_problem(client.post("/v1/jobs", json=small_recipe(**overrides)), 422)
    assert loc in [error["loc"] for error in body["errors"]], body["errors"]
    assert job_count(db) == before


def test_every_bad_field_is_named_at_once(client):
    recipe = small_recipe(**{"training.epochs": -1, "training.batch_size": 0, "seed": -5})
    body = assert_problem(client.post("/v1/jobs", json=recipe), 422)
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("training", "epochs"), ("training", "batch_size"), ("seed",)}


@pytest.mark.parametrize(
    "overrides, loc, words",
    [
        ({"dataset.name": "mnist"}, ["dataset", "name"], "unknown dataset"),
        ({"model.input_shape": [5]}, ["model", "input_shape"], "shape [4]"),
        ({"model.layers": [{"type": "dense", "units": 4, "activation": "softmax"}]},
         ["model", "layers", -1, "units"], "3 classes"),
        ({"pruning.schedule.frequency": 1000}, ["pruning", "schedule", "end_step"], "first mask update"),
        ({"pruning.schedule.end_step": 10_000}, ["pruning", "schedule", "end_step"], "past the run"),
        ({"pruning.schedule.end_step": 7}, ["pruning", "schedule", "end_step"], "never a mask update"),
        ({"model.layers": [{"type": "dense", "units": 4096}, {"type": "dense", "units": 4096},
                           {"type": "dense", "units": 3, "activation": "softmax"}]},
         ["model", "layers"], "parameters"),
        ({"pruning.layers": ["dense_0", "nope"]}, ["pruning", "layers", 1], "not a layer"),
        ({"training.loss": "binary_crossentropy"}, ["training", "loss"], "2-class"),
    ],
)
def test_recipe_that_cannot_train_is_422_with_the_reason(client, db, overrides, loc, words):
    before = job_count(db)
    body = assert_problem(client.post("/v1/jobs", json=small_recipe(**overrides)), 422)
    assert any(e["loc"] == loc for e in body["errors"]), body["errors"]
    assert words in body["detail"]
    assert job_count(db) == before


def test_malformed_json_is_400(client, db):
    before = job_count(db)
    assert_problem(client.post("/v1/jobs", data="{not json", content_type="application/json"), 400)
    assert job_count(db) == before


def test_wrong_content_type_is_415(client):
    assert_problem(client.post("/v1/jobs", data="name=x", content_type="application/x-www-form-urlencoded"), 415)


def test_oversized_body_is_413(client, app):
    big = "x" * (app.extensions["trainer"].settings.max_request_bytes + 10)
    assert_problem(client.post("/v1/jobs", data=big, content_type="application/json"), 413)


@pytest.mark.parametrize("path", [
    "/v1/jobs/0123456789abcdef0123456789abcdef",
    "/v1/jobs/0123456789abcdef0123456789abcdef/model",
    "/v1/jobs/0123456789abcdef0123456789abcdef/history",
    "/v1/jobs/0123456789abcdef0123456789abcdef/logs",
])
def test_unknown_job_is_404(client, path):
    assert_problem(client.get(path), 404)


def test_unknown_job_cancel_and_delete_are_404(client):
    assert_problem(client.post("/v1/jobs/0123456789abcdef0123456789abcdef/cancel"), 404)
    assert_problem(client.delete("/v1/jobs/0123456789abcdef0123456789abcdef"), 404)


def test_queued_job_model_and_delete_are_409_and_cancel_works_at_once(client):
    """No worker runs in this test: the job stays queued until cancelled."""
    job = client.post("/v1/jobs", json=small_recipe()).get_json()
    assert_problem(client.get(f"/v1/jobs/{job['id']}/model"), 409)
    assert_problem(client.delete(f"/v1/jobs/{job['id']}"), 409)
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.get_json()["status"] == "cancelled"
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel"), 409)
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204


def test_list_is_newest_first_and_paginates(client):
    ids = [client.post("/v1/jobs", json=small_recipe(name=f"page-{i}")).get_json()["id"] for i in range(5)]
    for job_id in ids:
        client.post(f"/v1/jobs/{job_id}/cancel")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "status": "cancelled", **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", query_string=params).get_json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [i for i in seen if i in ids] == list(reversed(ids))
    assert len(seen) == len(set(seen))


def test_bad_query_parameters_are_422(client):
    assert_problem(client.get("/v1/jobs", query_string={"limit": 0}), 422)
    assert_problem(client.get("/v1/jobs", query_string={"status": "done"}), 422)
    assert_problem(client.get("/v1/jobs", query_string={"cursor": "garbage"}), 422)


def test_openapi_document_is_generated_from_the_recipe_schema(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "/v1/jobs" in spec["paths"] and "/v1/jobs/{job_id}/model" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert "Recipe" in schemas and "DenseLayer" in schemas and "PolynomialDecay" in schemas
    assert client.get("/docs", follow_redirects=True).status_code == 200


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}
