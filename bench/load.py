"""``make bench-load``: 50 pollers on GET /v1/jobs/{id} and 10 submitters on POST /v1/jobs for 60 s, with wrk,
against gunicorn on loopback while a job trains. Reports requests/s, p50/p99 and every error.

Writes ``bench/results/load.json``. Needs wrk (``apt-get install wrk``; installed here when missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from core.settings import ROOT
from stack import processes
from stack.jobs import wait_for
from stack.recipes import small_recipe

POST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
        found = shutil.which("wrk")
    return found


def parse(output: str) -> dict:
    def latency(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": latency("50"),
        "p90_ms": latency("90"),
        "p99_ms": latency("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def main(seconds: int = 60) -> dict:
    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="load-"))
    env = processes.clean_env(TRAINER_VAR_DIR=tmp, TRAINER_SINGLE_USER="1", TRAINER_MAX_QUEUED_PER_OWNER="10000000")
    processes.migrate(env)
    worker = processes.start_worker(env, tmp / "worker.log", "load")
    api, url = processes.start_gunicorn(env, tmp / "api.log", ["--workers", "2", "--threads", "8"])
    try:
        long_job = small_recipe(**{"training.epochs": 1000, "training.batch_size": 4})
        job = httpx.post(f"{url}/v1/jobs", json=long_job).json()
        with httpx.Client(base_url=url) as http:
            wait_for(http, job["id"], {"running"}, timeout=None)
        script = tmp / "post.lua"
        script.write_text(POST_LUA % json.dumps(small_recipe(**{"training.epochs": 1})))
        common = ["-d", f"{seconds}s", "--latency", "--timeout", "10s"]
        pollers = subprocess.Popen(
            [wrk, "-t", "4", "-c", "50", *common, f"{url}/v1/jobs/{job['id']}"], stdout=subprocess.PIPE, text=True
        )
        submitters = subprocess.Popen(
            [wrk, "-t", "2", "-c", "10", "-s", str(script), *common, f"{url}/v1/jobs"], stdout=subprocess.PIPE, text=True
        )
        poll_out, submit_out = pollers.communicate(), submitters.communicate()
        status = httpx.get(f"{url}/v1/jobs/{job['id']}").json()
        results = {
            "seconds": seconds,
            "machine": f"{os.cpu_count()} cores",
            "gunicorn": "2 workers × 8 threads",
            "database": "sqlite (embedded)",
            "training_job_status_after": status["status"],
            "training_job_epochs_done": len(status["history"]),
            "pollers_50": parse(poll_out[0]),
            "submitters_10": parse(submit_out[0]),
        }
        httpx.post(f"{url}/v1/jobs/{job['id']}/cancel")
    finally:
        worker.stop()
        api.stop()
    out = ROOT / "bench" / "results" / "load.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
