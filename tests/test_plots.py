"""Pictures of what training did: drawn by the worker, served by the API (which never imports matplotlib)."""

from __future__ import annotations

import pytest

from tests.support import small_recipe, wait_for

pytestmark = pytest.mark.worker
PNG = b"\x89PNG\r\n\x1a\n"


def test_a_finished_job_has_its_four_plots(http, worker):
    job = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 3})).json()
    done = wait_for(http, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert set(done["links"]["plots"]) == {"curves", "sparsity", "layers", "weights"}
    for name, url in done["links"]["plots"].items():
        response = http.get(url)
        assert response.status_code == 200, name
        assert response.headers["Content-Type"] == "image/png" and response.content.startswith(PNG)
        assert len(response.content) > 2000  # a drawn picture, not an empty canvas
    assert http.get(f"/v1/jobs/{job['id']}/plots/nope.png").status_code in (404, 422)


def test_a_queued_job_has_no_plots_yet(client):
    job = client.post("/v1/jobs", json=small_recipe()).get_json()
    assert job["links"]["plots"] == {}
    assert client.get(f"/v1/jobs/{job['id']}/plots/curves.png").status_code == 404
    client.post(f"/v1/jobs/{job['id']}/cancel")
