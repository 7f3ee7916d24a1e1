"""Cancelling: a queued job ends at once (see test_api_errors); a running one stops at a batch boundary."""
from __future__ import annotations

import pytest

from tests.support import small_recipe, wait_for, wait_until

pytestmark = pytest.mark.worker


def test_cancel_running_job_stops_it_and_keeps_its_history(http, worker):
    recipe = small_recipe(**{"training.epochs": 400, "training.batch_size": 4, "name": "long"})
    job = http.post("/v1/jobs", json=recipe).json()
    wait_until(lambda: len(http.get(f"/v1/jobs/{job['id']}").json()["history"]) >= 2, timeout=120)

    response = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True

    done = wait_for(http, job["id"], {"cancelled", "succeeded", "failed"}, timeout=60)
    assert done["status"] == "cancelled"
    assert 2 <= len(done["history"]) < 400
    assert done["finished_at"] is not None and done["result"] is None
    assert http.get(f"/v1/jobs/{job['id']}/model").status_code == 409
    assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    assert "cancelled after" in http.get(f"/v1/jobs/{job['id']}/logs").text
