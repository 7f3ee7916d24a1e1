"""/openapi.json documents every response with the model that builds it, so a generated client gets typed objects.

The suite holds every JSON response to the document (``tests/conformance.py``, checked after each test); these
tests check the document itself and that the check catches a body off its schema.
"""

from __future__ import annotations

import pytest

from tests import conformance

JSON_TYPES = conformance.JSON_TYPES


def _operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_json_response_is_a_named_schema_not_a_bare_object(client):
    doc = client.get("/openapi.json").get_json()
    bare = []
    for path, method, operation in _operations(doc):
        for status, response in operation["responses"].items():
            for media, content in response.get("content", {}).items():
                if media in JSON_TYPES and "$ref" not in content["schema"]:
                    bare.append(f"{method.upper()} {path} {status} {media}: {content['schema']}")
    assert bare == []


@pytest.mark.parametrize(
    ("path", "method", "status", "schema"),
    [
        ("/v1/jobs", "post", "202", "Job"),
        ("/v1/jobs", "get", "200", "JobList"),
        ("/v1/jobs/{job_id}", "get", "200", "Job"),
        ("/v1/jobs/{job_id}/history", "get", "200", "History"),
        ("/v1/jobs/{job_id}/diagnostics", "get", "200", "Diagnostics"),
        ("/v1/datasets", "get", "200", "DatasetList"),
        ("/v1/datasets", "post", "201", "Dataset"),
        ("/v1/experiments", "post", "202", "Experiment"),
        ("/v1/experiments/{experiment_id}", "get", "200", "Experiment"),
        ("/v1/usage", "get", "200", "StorageUsage"),
        ("/readyz", "get", "503", "Readiness"),
        ("/v1/jobs/{job_id}", "get", "404", "Problem"),
    ],
)
def test_each_resource_names_its_model(client, path, method, status, schema):
    doc = client.get("/openapi.json").get_json()
    content = doc["paths"][path][method]["responses"][status]["content"]
    assert [c["schema"]["$ref"] for c in content.values() if "$ref" in c["schema"]] == [f"#/components/schemas/{schema}"]


def test_the_job_schema_types_its_stored_parts(client):
    """The recipe, plan, result and error are the core models the API and the worker exchange."""
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    job = schemas["Job"]["properties"]
    assert job["recipe"] == {"$ref": "#/components/schemas/Recipe"}
    assert {"$ref": "#/components/schemas/JobResult"} in job["result"]["anyOf"]
    assert {"$ref": "#/components/schemas/JobError"} in job["error"]["anyOf"]
    assert {"$ref": "#/components/schemas/JobPlan"} in schemas["Progress"]["properties"]["plan"]["anyOf"]
    assert "history" in job and "history" not in schemas["JobSummary"]["properties"]
    assert set(schemas["JobSummary"]["properties"]) == set(job) - {"history"}
    row = schemas["ComparisonRow"]["properties"]
    assert {"$ref": "#/components/schemas/MeanSpread"} in row["test_accuracy"]["anyOf"]


def test_an_experiments_base_is_documented_as_a_partial_recipe(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    base = schemas["ExperimentSpec"]["properties"]["base"]
    assert base["type"] == "object" and "required" not in base
    assert set(base["properties"]) == set(schemas["Recipe"]["properties"])
    assert base["properties"]["training"] == {"$ref": "#/components/schemas/TrainingSpec"}


def test_the_check_reports_a_body_off_its_schema(client):
    doc = client.get("/openapi.json").get_json()
    job = client.post("/v1/jobs", json={"dataset": {"name": "iris"}}).get_json()  # a 422 problem: fits Problem
    assert conformance.violations(doc, "/v1/jobs", "POST", 422, "application/problem+json", job) == []

    problem = {"title": "Invalid request", "status": "422", "detail": "x"}  # status as a string
    assert conformance.violations(doc, "/v1/jobs", "POST", 422, "application/problem+json", problem)
    assert conformance.violations(doc, "/v1/jobs", "GET", 200, "application/json", {"items": [{}]})
    assert conformance.violations(doc, "/v1/jobs", "GET", 299, "application/json", {})  # undocumented status
    assert conformance.violations(doc, "/jobs/{job_id}", "GET", 200, "text/html", "<html>") == []  # not in the API


def test_the_check_sees_the_suites_responses(client):
    """``request_finished`` reaches the check: a response made off-document is recorded (then cleared)."""
    from flask import Response, json

    from service.app import create_app

    app = create_app(client.application.extensions["trainer"].settings)

    @app.get("/v1/usage-wrong", doc_ui=False)
    def not_in_the_document():
        return {}

    off = {
        "limit_bytes": 10,
        "used_bytes": "many",
        "datasets_bytes": 0,
        "models_bytes": 0,
        "checkpoints_bytes": 0,
        "free_bytes": 10,
    }
    app.view_functions["usage.get_usage"] = lambda: Response(json.dumps(off), mimetype="application/json")
    assert app.test_client().get("/v1/usage").status_code == 200
    found = conformance.take()
    assert len(found) == 1 and "GET /v1/usage → 200" in found[0] and "used_bytes" in found[0]
    app.test_client().get("/v1/usage-wrong")
    assert conformance.take() == []
