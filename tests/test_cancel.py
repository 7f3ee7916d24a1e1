"""Cancelling: a queued job ends at once (see test_api_errors); a running one stops at a batch boundary."""

from __future__ import annotations

import pytest

from tests.support import UNTIL_CANCELLED, small_recipe, wait_for, wait_until

pytestmark = pytest.mark.worker


def test_cancel_running_job_stops_it_and_keeps_its_history(http, patient_http, worker):
    job = patient_http.post("/v1/jobs", json=small_recipe(**UNTIL_CANCELLED)).json()
    try:
        wait_until(lambda: len(http.get(f"/v1/jobs/{job['id']}").json()["history"]) >= 2, timeout=120)

        response = http.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 202
        assert response.json()["cancel_requested"] is True

        done = wait_for(http, job["id"], {"cancelled", "succeeded", "failed"}, timeout=60)
        assert done["status"] == "cancelled"
        assert len(done["history"]) >= 2
        assert done["finished_at"] is not None and done["result"] is None
        assert http.get(f"/v1/jobs/{job['id']}/model").status_code == 409
        assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
        assert "cancelled after" in http.get(f"/v1/jobs/{job['id']}/logs").text
    finally:
        http.post(f"/v1/jobs/{job['id']}/cancel")  # never leave the shared worker busy with it
