"""The job pages in a real headless Chromium (Debian's package), as a person would see them."""

from __future__ import annotations

import shutil

import pytest

from tests.support import UNTIL_CANCELLED, small_recipe, wait_for

pytestmark = pytest.mark.worker
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


def test_a_submitted_job_appears_moves_and_is_cancelled_from_its_page(browser, live_api, http, patient_http, worker):
    page = browser.new_page()
    page.goto(f"{live_api.url}/")
    job = patient_http.post("/v1/jobs", json=small_recipe(**{**UNTIL_CANCELLED, "name": "seen-in-browser"})).json()
    try:
        row = page.locator(f'tr[data-job="{job["id"]}"]')
        row.wait_for(timeout=10_000)  # the list refreshes itself
        assert "seen-in-browser" in row.inner_text()

        row.locator("a").click()
        page.wait_for_url(f"**/jobs/{job['id']}")
        page.wait_for_function("Number(document.getElementById('epoch').textContent) >= 1", timeout=120_000)
        first = int(page.locator("#epoch").inner_text())
        page.wait_for_function(f"Number(document.getElementById('epoch').textContent) > {first}", timeout=60_000)
        assert page.locator("#status").inner_text() == "running"

        page.locator("#cancel").click()
        page.wait_for_function("document.getElementById('status').textContent === 'cancelled'", timeout=60_000)
        assert page.locator("#cancel").is_hidden()
        assert page.locator("#history tr").count() == len(http.get(f"/v1/jobs/{job['id']}").json()["history"]) > first
    finally:
        http.post(f"/v1/jobs/{job['id']}/cancel")  # never leave the shared worker busy with it
        page.close()


def test_a_finished_job_shows_its_history_results_downloads_and_plots(browser, live_api, http, worker):
    job = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 4})).json()
    assert wait_for(http, job["id"], {"succeeded", "failed"})["status"] == "succeeded"
    page = browser.new_page()
    page.goto(f"{live_api.url}/jobs/{job['id']}")
    page.wait_for_function("document.getElementById('status').textContent === 'succeeded'", timeout=30_000)
    assert page.locator("#history tr").count() == 4
    page.wait_for_function(
        "[...document.querySelectorAll('img[data-plot]')].length === 4 && "
        "[...document.querySelectorAll('img[data-plot]')].every(i => i.complete && i.naturalWidth > 100)",
        timeout=30_000,
    )
    assert "sparsity" in page.locator("#result").inner_text()
    assert page.locator('#downloads a[data-format="h5"]').count() == 1
    page.close()


def test_the_page_reports_an_unknown_job(browser, live_api):
    page = browser.new_page()
    page.goto(f"{live_api.url}/jobs/0123456789abcdef0123456789abcdef")
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=10_000)
    assert "no job" in page.locator("#error").inner_text()
    page.close()
