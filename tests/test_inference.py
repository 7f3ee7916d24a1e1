"""Every succeeded job measures its inference: each format of its model and of its untrained dense twin.

A real worker with ``TRAINER_INFERENCE=full`` (the suite's default is ``off``) on a database and broker of this
module's own, real TensorFlow, tiny models. Nothing here asserts a speed: only that every figure is there, is a
real measurement (positive, finite, over at least 200 calls) and is shown — speed is ``bench.inference``'s.
"""

from __future__ import annotations

import math
import os
import shutil

import httpx
import pytest
from click.testing import CliRunner
from trainer_client.cli import cli

from core.migrate import upgrade
from core.results import InferenceReport
from core.settings import load_settings
from service.app import create_app
from stack.processes import LiveServer
from tests.conftest import FAST
from tests.support import small_recipe, start_worker, wait_for

pytestmark = pytest.mark.worker
FORMATS = {"keras", "tflite_float", "tflite_sparse", "tflite_sparse_int8"}

#: The iris MLP, pruned to 50 %, exported as h5 and sparse TFLite (so ``tflite_sparse`` is the export's own file).
MLP = small_recipe(
    **{"name": "inference-mlp", "export": {"formats": ["h5", "tflite"], "tflite_options": {"sparsity": True}}}
)
#: A small CNN on digits as 8×8×1 images, conv kernels pruned, exported as .keras and sparse int8 TFLite.
CNN = {
    "name": "inference-cnn",
    "dataset": {"name": "digits", "test_fraction": 0.2, "validation_fraction": 0.1, "reshape": [8, 8, 1]},
    "seed": 3,
    "model": {
        "input_shape": [8, 8, 1],
        "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
            {"type": "max_pooling2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ],
    },
    "training": {"optimizer": {"type": "adam", "learning_rate": 0.01}, "epochs": 2, "batch_size": 64},
    "pruning": {"schedule": {"type": "polynomial_decay", "final_sparsity": 0.6, "frequency": 2}},
    "export": {"formats": ["keras", "tflite"], "tflite_options": {"sparsity": True, "dynamic_range_int8": True}},
}


@pytest.fixture(scope="module")
def measuring(tmp_path_factory):
    """The API on a database of its own and one worker that measures; yields the API's URL."""
    tmp = tmp_path_factory.mktemp("inference")
    settings = load_settings(
        database_url=f"sqlite:///{tmp / 'trainer.sqlite'}",
        broker_url=f"sqla+sqlite:///{tmp / 'broker.sqlite'}",
        inference="full",
        **FAST,
    )
    upgrade(settings)
    server = LiveServer(create_app(settings))
    worker = start_worker(settings, tmp / "worker.log")
    yield server.url
    worker.stop()
    server.close()


@pytest.fixture(scope="module")
def finished(measuring):
    """Both jobs, submitted together and waited on: name → the job's JSON."""
    with httpx.Client(base_url=measuring, timeout=30) as http:
        ids = {recipe["name"]: http.post("/v1/jobs", json=recipe).json()["id"] for recipe in (MLP, CNN)}
        return {name: wait_for(http, job_id, timeout=300) for name, job_id in ids.items()}


def measured(job: dict) -> InferenceReport:
    assert job["status"] == "succeeded", job.get("error")
    return InferenceReport.model_validate(job["result"]["inference"])


def figures(report: InferenceReport):
    for side in (report.model, report.dense_twin):
        for entry in side.values():
            runs = [entry.single_thread] + ([entry.all_threads] if entry.all_threads else [])
            yield from (entry.bytes, entry.gzip_bytes, entry.peak_memory_bytes)
            for run in runs:
                yield from (run.batch1.median_ms, run.batch1.p90_ms, run.batch256_per_second)


@pytest.mark.parametrize("name", [MLP["name"], CNN["name"]])
def test_a_job_reports_every_format_of_its_model_and_its_dense_twin(finished, name):
    report = measured(finished[name])
    assert set(report.model) == set(report.dense_twin) == set(report.speedup) == FORMATS
    assert all(entry.format == fmt for side in (report.model, report.dense_twin) for fmt, entry in side.items())
    assert all(value > 0 and math.isfinite(value) for value in figures(report))
    assert all(value > 0 and math.isfinite(value) for value in report.speedup.values())
    for entry in [*report.model.values(), *report.dense_twin.values()]:
        assert entry.single_thread.threads == 1 and entry.single_thread.batch1.calls >= 200
        assert entry.single_thread.batch1.p90_ms >= entry.single_thread.batch1.median_ms
        if os.cpu_count() and os.cpu_count() > 1:
            assert entry.all_threads is not None and entry.all_threads.threads == os.cpu_count()
            assert entry.all_threads.batch1.calls >= 200
    assert report.cpu_count == os.cpu_count() and report.cpu


def test_the_pruned_model_is_smaller_gzipped_than_its_dense_twin(finished):
    """The twin is untrained and unpruned: its weights are all non-zero, so the pruned model's TFLite file compresses
    better (not its .keras: a trained model's also holds its compile config, as much as a tiny model's weights)."""
    for name in (MLP["name"], CNN["name"]):
        report = measured(finished[name])
        assert report.model["tflite_float"].gzip_bytes < report.dense_twin["tflite_float"].gzip_bytes


def test_the_exports_own_files_are_measured_not_converted_again(finished):
    mlp, cnn = finished[MLP["name"]], finished[CNN["name"]]
    assert measured(mlp).model["tflite_sparse"].bytes == mlp["result"]["sizes"]["tflite"]["bytes"]
    assert measured(cnn).model["tflite_sparse_int8"].bytes == cnn["result"]["sizes"]["tflite"]["bytes"]
    assert measured(cnn).model["keras"].bytes == cnn["result"]["sizes"]["keras"]["bytes"]


def test_a_job_says_it_measured_inference_in_its_log(measuring, finished):
    job = finished[MLP["name"]]
    text = httpx.get(f"{measuring}/v1/jobs/{job['id']}/logs").text
    assert "inference measured in" in text


def test_the_cli_shows_the_inference_table_in_80_columns(measuring, finished):
    job = finished[CNN["name"]]
    runner = CliRunner(env={"COLUMNS": "80"})
    result = runner.invoke(cli, ["--url", measuring, "status", job["id"]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("Inference on") :]
    assert "speed-up" in table and "dense twin:" in table and "…" not in table
    rows = [line for line in table.splitlines() if line.split() and line.split()[0] in FORMATS]
    model, twin = rows[:4], rows[4:]  # the model's formats, then (under "dense twin:") the twin's
    assert [line.split()[0] for line in model] == [line.split()[0] for line in twin] == list(measured(job).model)
    assert all(line.count("/") == 2 for line in rows)  # batch-1 median/p90 and batch-256 1/all threads
    for line in model:
        assert line.rstrip().endswith(f"{measured(job).speedup[line.split()[0]]:.2f}×")
    assert not any(line.rstrip().endswith("×") for line in twin)


def test_with_inference_off_a_job_has_none(http, worker):
    """The suite's own worker runs with TRAINER_INFERENCE=off."""
    job = wait_for(http, http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 2})).json()["id"])
    assert job["status"] == "succeeded"
    assert "inference" not in job["result"]


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_the_job_page_shows_the_inference_table(measuring, finished):
    from playwright.sync_api import sync_playwright

    from tests.test_job_page import FLAGS

    job = finished[MLP["name"]]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{measuring}/jobs/{job['id']}")
            page.wait_for_function("!document.getElementById('inference-section').hidden", timeout=30_000)
            rows = page.locator("#inference tbody tr")
            assert rows.count() == 8
            shown = {row.get_attribute("data-format"): row.inner_text() for row in rows.all()}
            assert set(shown) == FORMATS | {f"dense twin {fmt}" for fmt in FORMATS}
            assert f"{measured(job).speedup['keras']:.2f}×" in shown["keras"]
            assert "KiB" in shown["tflite_sparse"]
        finally:
            browser.close()


def test_an_unknown_inference_mode_is_refused_at_start():
    from core.settings import ConfigError

    with pytest.raises(ConfigError, match="TRAINER_INFERENCE is 'sometimes'; it must be one of full, off"):
        load_settings(inference="sometimes")
