"""A stored file that no longer matches its sha256 is reported, never served."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from core.models import Artifact, ArtifactChunk
from tests.support import small_recipe, wait_for

pytestmark = pytest.mark.worker


def test_a_corrupted_model_is_reported_not_served(http, worker, db):
    job = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 1})).json()
    wait_for(http, job["id"], {"succeeded"})
    assert http.get(f"/v1/jobs/{job['id']}/model").status_code == 200
    with db.session() as session:
        artifact_id = session.query(Artifact.id).filter_by(job_id=job["id"], format="h5").scalar()
        session.execute(
            update(ArtifactChunk)
            .where(ArtifactChunk.artifact_id == artifact_id, ArtifactChunk.seq == 0)
            .values(data=b"\x00" * 64)
        )
    response = http.get(f"/v1/jobs/{job['id']}/model")
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "sha256" in response.json()["detail"]
    assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"  # the job itself is intact
