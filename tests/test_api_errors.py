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
        ({"model.layers": [{"type": "dense", "units": 3, "activation": "sigmoidd"}]}, ["model", "layers", 0, "activation"]),
        ({"training.optimizer": {"type": "adam", "learning_rate": -1}}, ["training", "optimizer", "learning_rate"]),
        ({"training.optimizer": {"type": "lbfgs"}}, ["training", "optimizer"]),
        # every union's tag or member label is stripped alike, however the union is nested
        (
            {"training.learning_rate_schedule": {"type": "exponential_decay", "decay_steps": 0}},
            ["training", "learning_rate_schedule", "decay_steps"],
        ),
        (
            {"model.layers": [{"type": "dense", "units": 3, "kernel_initializer": {"type": "random_normal", "stddev": 0}}]},
            ["model", "layers", 0, "kernel_initializer", "stddev"],
        ),
        (
            {"model.layers": [{"type": "dense", "units": 3, "activation": {"type": "leaky_relu", "alpha": 1.5}}]},
            ["model", "layers", 0, "activation", "alpha"],
        ),
        ({"model.layers": [{"type": "activation", "activation": "sigmoidd"}]}, ["model", "layers", 0, "activation"]),
        ({"training.epochs": 0}, ["training", "epochs"]),
        ({"regularization": {"l1": -0.1}}, ["regularization", "l1"]),
        ({"pruning.schedule.final_sparsity": 1.0}, ["pruning", "schedule", "final_sparsity"]),
        ({"dataset.test_fraction": 1.5}, ["dataset", "test_fraction"]),
        ({"seed": "forty-two"}, ["seed"]),
        ({"export.formats": ["onnx"]}, ["export", "formats", 0]),
        ({"unknown_field": 1}, ["unknown_field"]),
        # strict types: nothing is coerced
        ({"model.layers": [{"type": "dense", "units": "300"}]}, ["model", "layers", 0, "units"]),
        ({"model.layers": [{"type": "dense", "units": True}]}, ["model", "layers", 0, "units"]),
        ({"model.layers": [{"type": "dense", "units": 3.0}]}, ["model", "layers", 0, "units"]),
        ({"pruning.schedule.final_sparsity": "0.8"}, ["pruning", "schedule", "final_sparsity"]),
        ({"pruning.schedule.final_sparsity": False}, ["pruning", "schedule", "final_sparsity"]),
        ({"training.epochs": 3.0}, ["training", "epochs"]),
        ({"training.diagnostics": "true"}, ["training", "diagnostics"]),
        ({"training.diagnostics": 1}, ["training", "diagnostics"]),
        ({"model.input_shape": ["4"]}, ["model", "input_shape", 0]),
        ({"regularization": {"l1_l2": ["0.1", 0]}}, ["regularization", "l1_l2", 0]),
        ({"dataset.relabel": {"0": "1"}}, ["dataset", "relabel", "0"]),
        # NUL in any text
        ({"name": "iris\x00"}, ["name"]),
        ({"description": "a\x00b"}, ["description"]),
        ({"pruning.layers": ["dense_0\x00"]}, ["pruning", "layers", 0]),
        ({"dataset.relabel": {"0\x00": 1}}, ["dataset", "relabel", "0\x00"]),
    ],
)
def test_invalid_recipe_is_422_naming_the_field(client, db, overrides, loc):
    before = job_count(db)
    body = assert_problem(client.post("/v1/jobs", json=small_recipe(**overrides)), 422)
    assert loc in [error["loc"] for error in body["errors"]], body["errors"]
    assert job_count(db) == before


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"training.optimizer": {"type": "adam", "learning_rate": 1}}, ("training", "optimizer", "learning_rate")),
        ({"dataset.test_fraction": 0}, None),
        ({"pruning.schedule.power": 2}, ("pruning", "schedule", "power")),
        (
            {
                "model.layers": [
                    {
                        "type": "dense",
                        "units": 3,
                        "activation": "softmax",
                        "kernel_constraint": {"type": "max_norm", "max_value": 3},
                    }
                ]
            },
            ("model", "layers", 0, "kernel_constraint", "max_value"),
        ),
        (
            {
                "model.layers": [{"type": "dense", "units": 16}, {"type": "dense", "units": 3, "activation": "softmax"}],
                "regularization": {"l1_l2": [0, 1]},
            },
            None,
        ),
    ],
)
def test_an_integer_may_stand_where_a_float_belongs(client, overrides, field):
    response = client.post("/v1/jobs", json=small_recipe(**overrides))
    if field is None:  # range checks still apply: 0 is not a valid test_fraction
        assert response.status_code in (202, 422) and response.status_code != 500
        return
    assert response.status_code == 202, response.get_data(as_text=True)
    job = response.get_json()
    value = job["recipe"]
    for part in field:
        value = value[part]
    assert isinstance(value, float)
    client.post(f"/v1/jobs/{job['id']}/cancel")


def test_every_bad_field_is_named_at_once(client):
    recipe = small_recipe(**{"training.epochs": -1, "training.batch_size": 0, "seed": -5})
    body = assert_problem(client.post("/v1/jobs", json=recipe), 422)
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("training", "epochs"), ("training", "batch_size"), ("seed",)}


@pytest.mark.parametrize(
    "overrides, loc, words",
    [
        ({"dataset.name": "mnist"}, ["dataset", "name"], "unknown dataset"),
        ({"model.input_shape": [5]}, ["model", "input_shape"], "shape [4]"),
        (
            {"model.layers": [{"type": "dense", "units": 4, "activation": "softmax"}]},
            ["model", "layers", -1, "units"],
            "3 classes",
        ),
        ({"pruning.schedule.frequency": 1000}, ["pruning", "schedule", "end_step"], "first mask update"),
        ({"pruning.schedule.end_step": 10_000}, ["pruning", "schedule", "end_step"], "past the run"),
        ({"pruning.schedule.end_step": 7}, ["pruning", "schedule", "end_step"], "never a mask update"),
        (
            {
                "model.layers": [
                    {"type": "dense", "units": 4096},
                    {"type": "dense", "units": 4096},
                    {"type": "dense", "units": 3, "activation": "softmax"},
                ]
            },
            ["model", "layers"],
            "parameters",
        ),
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


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/0123456789abcdef0123456789abcdef",
        "/v1/jobs/0123456789abcdef0123456789abcdef/model",
        "/v1/jobs/0123456789abcdef0123456789abcdef/history",
        "/v1/jobs/0123456789abcdef0123456789abcdef/logs",
    ],
)
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


@pytest.mark.parametrize(
    "query, loc",
    [
        ("limit=2.0", ["limit"]),
        ("limit=1_0", ["limit"]),
        ("limit=%2010", ["limit"]),
        ("limit=true", ["limit"]),
        ("limit=%2B5", ["limit"]),
        ("limit=", ["limit"]),
        ("status=queued%00", ["status"]),
        ("cursor=a%00b", ["cursor"]),
        ("limit=5&stauts=queued", ["stauts"]),
        ("limit=99999999999999999999", ["limit"]),
    ],
)
def test_query_parameters_are_strict_and_name_the_parameter(client, query, loc):
    body = assert_problem(client.get(f"/v1/jobs?{query}"), 422)
    assert loc in [error["loc"] for error in body["errors"]], body["errors"]


def test_a_plain_integer_query_parameter_is_accepted(client):
    assert client.get("/v1/jobs?limit=3").status_code == 200


def test_a_nul_idempotency_key_is_never_a_500_and_leaks_no_sql(client, backend):
    """No field validation covers a header: on PostgreSQL the database refuses the NUL (a DataError), and
    the client gets a 422 that names no table, column or statement."""
    response = client.post("/v1/jobs", json=small_recipe(), headers={"Idempotency-Key": "key\x00nul"})
    if backend.database_url.startswith("sqlite"):
        assert response.status_code == 202
        client.post(f"/v1/jobs/{response.get_json()['id']}/cancel")
        return
    body = assert_problem(response, 422)
    assert not any(word in body["detail"].lower() for word in ("insert", "idempotency", "select", "psycopg"))


def test_a_database_integrity_conflict_is_a_409_that_leaks_no_sql(backend):
    """A real duplicate key, raised by the real database through a view: one mapping, both backends."""
    from core.models import Experiment
    from service.app import create_app, services

    app = create_app(backend)

    @app.post("/duplicate-experiment", doc_ui=False)
    def duplicate():
        with services().db.session() as session:
            for _ in range(2):
                session.add(Experiment(id="f" * 32, owner="x", name="dup", spec={}))
                session.flush()
        return {}

    body = assert_problem(app.test_client().post("/duplicate-experiment"), 409)
    assert not any(word in body["detail"].lower() for word in ("insert", "experiments", "unique", "duplicate key"))


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


@pytest.mark.parametrize("form, loc", [({"name": "a\x00b"}, ["name"]), ({"label_column": "y\x00"}, ["label_column"])])
def test_nul_in_an_upload_form_field_is_422_naming_it(client, form, loc):
    import io

    response = client.post(
        "/v1/datasets", data={"file": (io.BytesIO(b"a,y\n1,0\n2,1\n"), "d.csv"), **form}, content_type="multipart/form-data"
    )
    body = assert_problem(response, 422)
    assert loc in [error["loc"] for error in body["errors"]], body


def test_domain_errors_carry_no_http_and_each_maps_to_a_status_in_one_table():
    """core names causes; service/problems.py alone knows statuses, titles and headers."""
    import inspect

    from core import errors
    from service.problems import PROBLEMS

    classes = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.TrainerError)]
    assert len(classes) >= 20
    for cls in classes:
        assert not {"status", "title", "headers"} & set(vars(cls)), cls
        assert next(PROBLEMS[base] for base in cls.__mro__ if base in PROBLEMS).status >= 400
