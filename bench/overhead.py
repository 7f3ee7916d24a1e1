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
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONTRACT = json.loads((ROOT / "examples" / "recipes" / "contract-digits.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_job(http: httpx.Client, job_id: str, statuses: set[str], interval: float = 0.05) -> dict:
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(interval)


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", action="store_true", help="PostgreSQL + Redis instead of the embedded default")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "DATABASE_URL", "CELERY_"))}
    env["TRAINER_SINGLE_USER"] = "1"
    pg_db = None
    if args.redis:
        import psycopg

        pg_db = f"trainer_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_db}"')
        env["DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_db}"
        env["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/12"
        backend = "postgres+redis"
    else:
        env["TRAINER_VAR_DIR"] = str(tmp)
        backend = "sqlite+sqla"
    subprocess.run([sys.executable, "-m", "core.migrate"], cwd=ROOT, env=env, check=True, capture_output=True)

    port = free_port()
    t0 = time.perf_counter()
    api = start([str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
                 "service.app:create_app()"], env, tmp / "api.log")
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.02)
    api_start_s = time.perf_counter() - t0
    worker = start([str(BIN / "celery"), "-A", "worker.celery_app", "worker", "--concurrency", "1",
                    "--loglevel", "INFO", "--without-mingle", "--without-gossip"], env, tmp / "worker.log")
    while " ready." not in (tmp / "worker.log").read_text():
        time.sleep(0.2)
    results: dict = {"backend": backend, "machine": f"{platform.node()} {platform.machine()} "
                     f"{os.cpu_count()} cores, Python {platform.python_version()}",
                     "date": datetime.now(UTC).isoformat(timespec="seconds"),
                     "api_start_s": round(api_start_s, 3)}
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            for _ in range(20):
                http.get("/openapi.json")
                http.get("/v1/datasets")
            api_children = subprocess.run(["pgrep", "-P", str(api.pid)], capture_output=True, text=True).stdout.split()
            results["api_rss_mb"] = {"master": round(rss_mb(api.pid), 1),
                                     "worker": [round(rss_mb(int(p)), 1) for p in api_children]}

            tiny = json.loads(json.dumps(CONTRACT))
            tiny["training"]["epochs"] = 1
            tiny.pop("pruning")
            server_s, client_s = [], []
            for _ in range(5):
                time.sleep(1.0)  # let the worker fork its next child: "idle worker"
                sent = time.perf_counter()
                job = http.post("/v1/jobs", json=tiny).json()
                running = wait_job(http, job["id"], {"running", "succeeded", "failed"}, interval=0.01)
                client_s.append(time.perf_counter() - sent)
                server_s.append((parse_ts(running["started_at"]) - parse_ts(running["created_at"])).total_seconds())
                wait_job(http, job["id"], {"succeeded", "failed"})
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
                done = wait_job(http, job["id"], {"succeeded", "failed"})
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
        stop(worker)
        stop(api)
        if pg_db:
            import psycopg

            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
    out = ROOT / "bench" / "results" / f"overhead-{backend.replace('+', '-')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    table(results)
    print(f"written to {out.relative_to(ROOT)}")


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
