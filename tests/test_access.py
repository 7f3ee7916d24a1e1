"""Strangers: tokens, owners, limits and idempotent submission."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core import tokens
from service.app import create_app
from tests.support import small_recipe


@pytest.fixture
def secured(backend):
    """The same database with tokens required: alice from the environment, bob from the database.

    Bob's row is deleted afterwards: a single-user app refuses to start over a database that holds tokens.
    """
    from sqlalchemy import delete

    from core.models import ApiToken

    settings = replace(backend, single_user=False, api_tokens="alice-secret:alice", max_queued_per_owner=3)
    app = create_app(settings)
    db = app.extensions["trainer"].db
    with db.session() as session:
        bob = tokens.create(session, "bob", "test")
    yield app, {"alice": {"Authorization": "Bearer alice-secret"}, "bob": {"Authorization": f"Bearer {bob}"}}
    with db.session() as session:
        session.execute(delete(ApiToken).where(ApiToken.token_sha256 == tokens.digest(bob)))
    db.engine.dispose()


def test_missing_or_wrong_token_is_401_with_a_challenge(secured):
    app, _ = secured
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic YWxpY2U6eA=="}):
        response = client.get("/v1/jobs", headers=headers)
        assert response.status_code == 401 and response.mimetype == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/healthz").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_tokens_are_stored_hashed(secured, db):
    from sqlalchemy import select

    from core.models import ApiToken

    _, headers = secured
    bob = headers["bob"]["Authorization"].split()[1]
    with db.session() as session:
        stored = session.scalars(select(ApiToken.token_sha256)).all()
    assert bob not in stored and tokens.digest(bob) in stored


def test_another_owner_gets_404_for_jobs_and_datasets(secured):
    import io

    import numpy as np

    app, headers = secured
    client = app.test_client()
    job = client.post("/v1/jobs", json=small_recipe(), headers=headers["alice"]).get_json()
    try:
        for path in (
            f"/v1/jobs/{job['id']}",
            f"/v1/jobs/{job['id']}/history",
            f"/v1/jobs/{job['id']}/logs",
            f"/v1/jobs/{job['id']}/model",
        ):
            assert client.get(path, headers=headers["bob"]).status_code == 404
        # the job's body is cached by version once alice has seen it; neither the body nor a 304 reaches bob
        alice_etag = client.get(f"/v1/jobs/{job['id']}", headers=headers["alice"]).headers["ETag"]
        for params in ("", "?wait=1"):
            theirs = client.get(f"/v1/jobs/{job['id']}{params}", headers={**headers["bob"], "If-None-Match": alice_etag})
            assert theirs.status_code == 404
        assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers["bob"]).status_code == 404
        assert job["id"] not in [j["id"] for j in client.get("/v1/jobs", headers=headers["bob"]).get_json()["items"]]
        buffer = io.BytesIO()
        np.savez(buffer, x=np.zeros((10, 4)), y=np.arange(10) % 3)
        data = client.post(
            "/v1/datasets",
            data={"file": (io.BytesIO(buffer.getvalue()), "a.npz")},
            headers=headers["alice"],
            content_type="multipart/form-data",
        ).get_json()
        assert data["id"] not in [d["id"] for d in client.get("/v1/datasets", headers=headers["bob"]).get_json()["items"]]
        theirs = small_recipe(**{"dataset.name": data["id"]})
        response = client.post("/v1/jobs", json=theirs, headers=headers["bob"])
        assert response.status_code == 422 and "unknown dataset" in response.get_json()["detail"]
    finally:
        client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers["alice"])


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(secured):
    app, headers = secured
    client = app.test_client()
    key = {"Idempotency-Key": "retry-123", **headers["alice"]}
    first = client.post("/v1/jobs", json=small_recipe(name="idem"), headers=key)
    again = client.post("/v1/jobs", json=small_recipe(name="idem"), headers=key)
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    other = client.post("/v1/jobs", json=small_recipe(name="something else"), headers=key)
    assert other.status_code == 422 and "different body" in other.get_json()["detail"]
    bob_same_key = client.post(
        "/v1/jobs", json=small_recipe(name="idem"), headers={"Idempotency-Key": "retry-123", **headers["bob"]}
    )
    assert bob_same_key.get_json()["id"] != first.get_json()["id"]  # keys are per owner
    for response in (first, bob_same_key):
        client.post(f"/v1/jobs/{response.get_json()['id']}/cancel", headers=headers["alice"])
        client.post(f"/v1/jobs/{response.get_json()['id']}/cancel", headers=headers["bob"])


def test_queued_jobs_per_owner_are_limited_with_429(secured):
    app, headers = secured
    client = app.test_client()
    made = []
    try:
        for _ in range(3):
            made.append(client.post("/v1/jobs", json=small_recipe(), headers=headers["bob"]).get_json()["id"])
        response = client.post("/v1/jobs", json=small_recipe(), headers=headers["bob"])
        assert response.status_code == 429 and response.headers["Retry-After"]
    finally:
        for job_id in made:
            client.post(f"/v1/jobs/{job_id}/cancel", headers=headers["bob"])


@pytest.mark.parametrize(
    "overrides, loc",
    [
        ({"training.epochs": 100_000}, ["training", "epochs"]),
        ({"training.max_runtime_s": 10**9}, ["training", "max_runtime_s"]),
        ({"model.layers": [{"type": "dense", "units": 10**6}]}, ["model", "layers", 0, "units"]),
        ({"model.layers": [{"type": "dense", "units": 3}] * 201}, ["model", "layers"]),
    ],
)
def test_limits_are_clear_4xx(client, overrides, loc):
    response = client.post("/v1/jobs", json=small_recipe(**overrides))
    assert response.status_code == 422
    assert any(e["loc"][: len(loc)] == loc for e in response.get_json()["errors"])


def test_idempotency_keys_expire(backend):
    app = create_app(replace(backend, idempotency_ttl_s=0))
    client = app.test_client()
    key = {"Idempotency-Key": "short-lived"}
    first = client.post("/v1/jobs", json=small_recipe(), headers=key).get_json()
    second = client.post("/v1/jobs", json=small_recipe(), headers=key).get_json()
    assert first["id"] != second["id"]
    for job in (first, second):
        client.post(f"/v1/jobs/{job['id']}/cancel")


def test_upload_over_the_limit_is_413(backend):
    import io

    app = create_app(replace(backend, max_upload_bytes=1000))
    response = app.test_client().post(
        "/v1/datasets", data={"file": (io.BytesIO(b"x" * 5000), "big.csv")}, content_type="multipart/form-data"
    )
    assert response.status_code == 413 and response.mimetype == "application/problem+json"


def test_cancel_racing_completion_ends_in_exactly_one_state(client, db, backend):
    from core import admission, job_state
    from core.models import Job, JobStatus
    from core.recipe import Recipe

    with db.session() as s:
        job = admission.create(s, Recipe.model_validate(small_recipe()), "default", backend)
    with db.session() as s:
        attempt = job_state.claim(s, job.id, "w")
    assert client.post(f"/v1/jobs/{job.id}/cancel").get_json()["cancel_requested"] is True
    with db.session() as s:  # the worker finished before it saw the request
        assert job_state.finish(s, job.id, attempt, JobStatus.SUCCEEDED)
        assert not job_state.finish(s, job.id, attempt, JobStatus.CANCELLED)
    assert client.post(f"/v1/jobs/{job.id}/cancel").status_code == 409
    with db.session() as s:
        assert s.get(Job, job.id).status == "succeeded"
