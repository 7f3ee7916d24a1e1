"""The seed's model-A / model-B story, run through the API: ``python examples/transfer/story.py [URL]``.

Trains A (8 digit classes) and an autoencoder on all digits, then B (6 vs 8, 100 labelled samples) from
scratch, on A, and on the autoencoder's encoder, and prints B's three test accuracies. B's head is the seed's,
``Dense(1, activation="sigmoid")`` with ``binary_crossentropy`` ("is it a 6?").
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent


def run(http: httpx.Client, name: str, base: dict[str, str]) -> dict:
    recipe = json.loads((HERE / f"{name}.json").read_text())
    if "transfer" in recipe:
        recipe["transfer"]["base_job_id"] = base[recipe["transfer"]["reuse"]]
    response = http.post("/v1/jobs", json=recipe)
    response.raise_for_status()
    job_id = response.json()["id"]
    while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
        time.sleep(0.5)
    if job["status"] != "succeeded":
        raise SystemExit(f"{name}: {job['status']} {job['error']}")
    return job


def main(url: str) -> dict:
    with httpx.Client(base_url=url, timeout=30) as http:
        a = run(http, "1-model-A", {})
        ae = run(http, "4-autoencoder", {})
        bases = {"all_but_output": a["id"], "encoder": ae["id"]}
        results = {"model A (8 classes) test accuracy": a["result"]["test"]["accuracy"]}
        for name, label in (("2-model-B-scratch", "B from scratch"), ("3-model-B-on-A", "B on A"),
                            ("5-model-B-on-autoencoder", "B on the autoencoder's encoder")):
            results[label] = run(http, name, bases)["result"]["test"]["accuracy"]
    for label, value in results.items():
        print(f"{label:<40} {value:.4f}")
    return results


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
