"""Fashion-MNIST uploaded as a uint8 ``.npz`` trains like the built-in, and what the job's process holds for it.

``python -m bench.upload_scale`` (issue 12, item 3): writes the four arrays of the built-in set (``x`` uint8
(60000, 28, 28), ``y``, ``x_test`` (10000, 28, 28), ``y_test``) to one uncompressed ``.npz``, uploads it through
``POST /v1/datasets`` to a real API + worker (embedded SQLite by default, ``--backend postgres``) and trains:

- the item-7 recipe (``bench.overhead.FASHION_MLP``) on the upload, and the same recipe on the built-in;
- both again with ``dataset.standardize``: an upload keeps its stored values (0..255), the built-in is divided
  by 255, and a z-score is the same for both, so this pair must agree to float rounding.

For each job: test accuracy, sparsity, the dataset read time from the job's log, and the peak RSS and peak
private memory (``Private_Clean + Private_Dirty``) of the child process that trained it (sampled every 20 ms
from /proc; the child shares ~700 MB of imported libraries with its parent, which RSS counts and private
memory does not). Also the upload's time and the API worker's RSS rise while it parses and stores the file.
Writes ``bench/results/upload-scale.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.harness import RssSampler, backend, machine, start_api, start_worker, table, write
from bench.overhead import FASHION_MLP
from core.datasets import BUILTIN
from core.settings import ROOT
from stack.jobs import wait_for
from worker import data


def npz(path: Path) -> dict:
    from core.recipe import DatasetSpec

    arrays = data.load(None, DatasetSpec(name="fashion_mnist"))
    x, y = arrays.x, arrays.y.astype(np.uint8)
    np.savez(path, x=x, y=y, x_test=arrays.x_test, y_test=arrays.y_test.astype(np.uint8))
    return {
        "bytes": path.stat().st_size,
        "x": [str(x.dtype), list(x.shape)],
        "x_test": [str(arrays.x_test.dtype), list(arrays.x_test.shape)],
    }


def child_of(worker_log: str, job_id: str) -> int | None:
    m = re.search(rf"job {job_id}: attempt \d+ on [^:]+:(\d+)", worker_log)
    return int(m.group(1)) if m else None


def train(http: httpx.Client, worker, recipe: dict) -> dict:
    with RssSampler(worker.children, uss=True) as sampler:
        started = time.perf_counter()
        job = http.post("/v1/jobs", json=recipe)
        assert job.status_code in (201, 202), job.text
        job_id = job.json()["id"]
        done = wait_for(http, job_id, timeout=1800, poll=0.2)
        seconds = time.perf_counter() - started
    pid = child_of(worker.log(), job_id)
    if done["status"] != "succeeded":  # a finding, not a crash of the bench: say how it ended
        return {
            "dataset": recipe["dataset"],
            "job_id": job_id,
            "status": done["status"],
            "error": done["error"],
            "seconds": round(seconds, 1),
            "test_accuracy": None,
            "sparsity": None,
            "child_peak_rss_mb": round(sampler.peak_kb.get(pid, 0) / 1024, 1),
            "child_peak_private_mb": round(sampler.peak_uss_kb.get(pid, 0) / 1024, 1),
        }
    logs = http.get(f"/v1/jobs/{job_id}/logs").text
    read = re.search(r"read fashion_mnist .* in ([\d.]+) s", logs)
    history = done["history"]
    return {
        "dataset": recipe["dataset"],
        "job_id": job_id,
        "status": "succeeded",
        "seconds": round(seconds, 1),
        "train_seconds": done["result"]["train_seconds"],
        "test_accuracy": round(done["result"]["test"]["accuracy"], 4),
        "test_loss": round(done["result"]["test"]["loss"], 4),
        "final_val_accuracy": history[-1].get("val_accuracy") if history else None,
        "sparsity": done["result"]["sparsity"]["overall"],
        "builtin_read_s": float(read.group(1)) if read else None,
        "child_pid": pid,
        "child_peak_rss_mb": round(sampler.peak_kb.get(pid, 0) / 1024, 1),
        "child_peak_private_mb": round(sampler.peak_uss_kb.get(pid, 0) / 1024, 1),
        "child_first_rss_mb": round(sampler.first_kb.get(pid, 0) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    results = {**machine(), "backend": args.backend, "epochs": args.epochs}
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp, backend(args.backend) as be:
        path = Path(tmp) / "fashion_mnist_uint8.npz"
        results["file"] = npz(path)
        settings = be.settings()
        results["limits"] = {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_dataset_bytes": settings.max_dataset_bytes,
            "file_share_of_upload_limit": round(path.stat().st_size / settings.max_upload_bytes, 3),
        }
        api, url = start_api(be)
        worker = start_worker(be, "upload")
        try:
            with httpx.Client(base_url=url, timeout=300) as http:
                with RssSampler(api.children) as api_rss:
                    started = time.perf_counter()
                    with path.open("rb") as fh:
                        answer = http.post(
                            "/v1/datasets", files={"file": (path.name, fh)}, data={"name": "fashion-mnist-uint8"}
                        )
                    upload_s = time.perf_counter() - started
                assert answer.status_code == 201, answer.text
                dataset = answer.json()
                stored = http.get("/v1/usage").json()
                results["upload"] = {
                    "seconds": round(upload_s, 2),
                    "mb_per_s": round(path.stat().st_size / 1e6 / upload_s, 1),
                    "described": {
                        k: dataset.get(k)
                        for k in ("n_samples", "n_test_samples", "feature_shape", "n_classes", "storage_dtype")
                    },
                    "api_worker_rss_mb": {
                        "first": max(api_rss.first_kb.values()) / 1024,
                        "peak": max(api_rss.peak_kb.values()) / 1024,
                    },
                    "usage": stored,
                }
                runs = {}
                for label, name, standardize in (
                    ("upload", dataset["id"], False),
                    ("built-in", "fashion_mnist", False),
                    ("upload, standardize", dataset["id"], True),
                    ("built-in, standardize", "fashion_mnist", True),
                ):
                    recipe = json.loads(json.dumps(FASHION_MLP))
                    recipe["training"]["epochs"] = args.epochs
                    recipe["dataset"]["name"] = name
                    if standardize:
                        recipe["dataset"]["standardize"] = True
                    runs[label] = train(http, worker, recipe)
                    print(label, runs[label], flush=True)
                results["runs"] = runs
        finally:
            worker.stop()
            api.stop()
    info = BUILTIN["fashion_mnist"]
    results["arrays_mb"] = {
        "uint8_all": round((info.n_samples + info.n_test_samples) * 784 / 2**20, 1),
        "float32_used": round((info.n_samples + info.n_test_samples) * 784 * 4 / 2**20, 1),
    }
    out = write("upload-scale", results)
    table(
        f"Fashion-MNIST as a {results['file']['bytes'] / 1e6:.1f} MB uint8 .npz upload vs the built-in "
        f"({args.backend}, {args.epochs} epochs)",
        ["job", "test acc", "sparsity", "child peak RSS MB", "child peak private MB", "s"],
        [
            [k, r["test_accuracy"], r["sparsity"], r["child_peak_rss_mb"], r["child_peak_private_mb"], r["seconds"]]
            for k, r in results["runs"].items()
        ],
    )
    print(f"upload: {results['upload']}")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
