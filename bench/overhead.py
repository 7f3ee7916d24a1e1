"""``make bench``: what the service costs on top of a plain Keras + TF-MOT script, and how light the API is.

Measures, on this machine, in one run:
- the API process (gunicorn, one worker): time from exec to the first ``/healthz`` answer, and its RSS;
- time from ``POST /v1/jobs`` to ``running`` on an idle worker (server timestamps and as a client sees it);
- the contract's digits recipe (30 epochs, pruning to 0.8): a plain script (``bench/plain_script.py``, a
  fresh process, as a user runs it) vs. the service (submit → succeeded → h5 downloaded), alternated.

Embedded SQLite + SQLAlchemy broker by default; ``--redis`` uses PostgreSQL + Redis on this machine.
Writes ``bench/results/overhead-<backend>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench import harness as h
from core.settings import ROOT
from stack.jobs import wait_for
from stack.processes import start_gunicorn

CONTRACT = json.loads((ROOT / "examples" / "recipes" / "contract-digits.json").read_text())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", action="store_true", help="PostgreSQL + Redis instead of the embedded default")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    backend = "postgres+redis" if args.redis else "sqlite+sqla"
    with h.backend("postgres" if args.redis else "sqlite", TRAINER_LOG_LEVEL="INFO") as b:
        results = measure(b, backend, args)
    out = ROOT / "bench" / "results" / f"overhead-{backend.replace('+', '-')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    table(results)
    print(f"written to {out.relative_to(ROOT)}")


def measure(b: h.Backend, backend: str, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    api, url = start_gunicorn(b.env, b.tmp / "api.log", ["--workers", "1", "--threads", "4"], poll=0.02)
    api_start_s = time.perf_counter() - t0
    worker = h.start_worker(b, "overhead")
    results: dict = {"backend": backend, "machine": f"{platform.node()} {platform.machine()} "
                     f"{os.cpu_count()} cores, Python {platform.python_version()}",
                     "date": datetime.now(UTC).isoformat(timespec="seconds"),
                     "api_start_s": round(api_start_s, 3)}
    env = b.env
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            for _ in range(20):
                http.get("/openapi.json")
                http.get("/v1/datasets")
            results["api_rss_mb"] = {"master": round(rss_mb(api.pid), 1),
                                     "worker": [round(rss_mb(p), 1) for p in api.children()]}

            tiny = json.loads(json.dumps(CONTRACT))
            tiny["training"]["epochs"] = 1
            tiny.pop("pruning")
            server_s, client_s = [], []
            for _ in range(5):
                time.sleep(1.0)  # let the worker fork its next child: "idle worker"
                sent = time.perf_counter()
                job = http.post("/v1/jobs", json=tiny).json()
                running = wait_for(http, job["id"], {"running"}, timeout=None, poll=0.01)
                client_s.append(time.perf_counter() - sent)
                server_s.append((parse_ts(running["started_at"]) - parse_ts(running["created_at"])).total_seconds())
                wait_for(http, job["id"], timeout=None, poll=0.05)
            results["submit_to_running_s"] = {"server_median": round(statistics.median(server_s), 3),
                                              "client_median": round(statistics.median(client_s), 3),
                                              "server_all": [round(v, 3) for v in server_s]}

            recipe = json.loads(json.dumps(CONTRACT))
            recipe["training"]["epochs"] = args.epochs
            plain, service, accuracy, plain_work, service_work = [], [], {}, [], []
            for _ in range(args.pairs):
                t = time.perf_counter()
                out = subprocess.run([sys.executable, "-m", "bench.plain_script", str(args.epochs)], cwd=ROOT,
                                     env=env, capture_output=True, text=True, check=True)
                plain.append(time.perf_counter() - t)
                fields = dict(f.split("=") for f in out.stdout.strip().splitlines()[-1].split())
                accuracy["plain"] = float(fields["accuracy"])
                plain_work.append(float(fields["after_imports"]))
                time.sleep(1.0)
                t = time.perf_counter()
                job = http.post("/v1/jobs", json=recipe).json()
                done = wait_for(http, job["id"], timeout=None, poll=0.05)
                assert done["status"] == "succeeded", done["error"]
                http.get(f"/v1/jobs/{job['id']}/model", params={"format": "h5"}).raise_for_status()
                service.append(time.perf_counter() - t)
                accuracy["service"] = round(done["result"]["test"]["accuracy"], 4)
                service_work.append(done["result"]["train_seconds"])
            ratios = [b / a for a, b in zip(plain, service)]
            results["digits_job"] = {
                "epochs": args.epochs, "pairs": args.pairs,
                "plain_script_s": [round(v, 2) for v in plain], "service_s": [round(v, 2) for v in service],
                "median_ratio_service_over_plain": round(statistics.median(ratios), 3),
                "plain_median_s": round(statistics.median(plain), 2),
                "service_median_s": round(statistics.median(service), 2), "accuracy": accuracy,
                # Without process start and imports: the script's code after its imports vs the worker's
                # build + fit + evaluate (export and storage excluded).
                "plain_after_imports_median_s": round(statistics.median(plain_work), 3),
                "worker_train_median_s": round(statistics.median(service_work), 3),
            }
    finally:
        worker.stop()
        api.stop()
    return results


def table(r: dict) -> None:
    d = r["digits_job"]
    rows = [
        ("API start (exec → /healthz)", f"{r['api_start_s']:.2f} s"),
        ("API RSS (gunicorn worker)", f"{max(r['api_rss_mb']['worker'])} MB"),
        ("POST → running, server median", f"{r['submit_to_running_s']['server_median']:.3f} s"),
        ("POST → running, client median", f"{r['submit_to_running_s']['client_median']:.3f} s"),
        (f"digits {d['epochs']} ep: plain script (median)", f"{d['plain_median_s']:.2f} s"),
        (f"digits {d['epochs']} ep: service submit→download", f"{d['service_median_s']:.2f} s"),
        ("ratio service / script (median)", f"{d['median_ratio_service_over_plain']:.3f}"),
        ("script after imports / worker train", f"{d['plain_after_imports_median_s']:.2f} s / "
                                                  f"{d['worker_train_median_s']:.2f} s"),
    ]
    print(f"\n{r['backend']} on {r['machine']}")
    for name, value in rows:
        print(f"  {name:<48} {value}")


if __name__ == "__main__":
    main()
