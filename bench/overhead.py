"""``make bench``: what the service costs on top of a plain Keras + TF-MOT script, and how light the API is.

Measures, on this machine, in one run:
- the API process (gunicorn, one worker): time from exec to the first ``/healthz`` answer, and its RSS;
- time from ``POST /v1/jobs`` to ``running`` on an idle worker (server timestamps and as a client sees it);
- the contract's digits recipe (30 epochs, pruning to 0.8): a plain script (``bench/plain_script.py``, a
  fresh process, as a user runs it) vs. the service (submit → succeeded → h5 downloaded), alternated.

Embedded SQLite + SQLAlchemy broker by default; ``--redis`` uses PostgreSQL + Redis on this machine.
Writes ``bench/results/overhead-<backend>.json``.

``--fashion``: the same race at the seed's scale instead (issue 12, item 7): the seed's MLP 300-100 on
Fashion-MNIST's 60,000 images, pruned to 90 %, 10 epochs, 3 alternated pairs (``FASHION_MLP`` vs
``bench/plain_script.py … fashion_mnist``), the default checkpoint policy on; per pair the service's time is
split into queue, training (build + fit + evaluate), dataset read, store + download, from the job's own
timestamps and log. Writes ``bench/results/overhead-fashion-<backend>.json``.
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
#: The seed's first model (examples/recipes/fashion-mnist-mlp.json) pruned to 90 % over 10 epochs, h5 only:
#: what bench/plain_script.py does by hand with ``fashion_mnist``.
FASHION_MLP = {
    **json.loads((ROOT / "examples" / "recipes" / "fashion-mnist-mlp.json").read_text()),
    "name": "bench-fashion-mlp-pruned-90",
    "description": "The seed's MLP (Flatten [28, 28], Dense 300-100 ReLU, softmax 10, SGD 0.01, batch 32) pruned to "
    "90 % by TF-MOT's polynomial decay, 10 epochs, Fashion-MNIST's official split.",
    "pruning": {"schedule": {"type": "polynomial_decay", "final_sparsity": 0.9, "frequency": 100}},
}
FASHION_MLP["training"] = {**FASHION_MLP["training"], "epochs": 10}


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
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


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
    parser.add_argument("--fashion", action="store_true", help="the seed's MLP on Fashion-MNIST (issue 12, item 7)")
    parser.add_argument("--pairs", type=int, default=None, help="alternated pairs (5 digits, 3 Fashion-MNIST)")
    parser.add_argument("--epochs", type=int, default=None, help="30 digits, 10 Fashion-MNIST")
    args = parser.parse_args()
    args.pairs = args.pairs or (3 if args.fashion else 5)
    args.epochs = args.epochs or (10 if args.fashion else 30)

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
    api = start(
        [
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
            "service.app:create_app()",
        ],
        env,
        tmp / "api.log",
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.02)
    api_start_s = time.perf_counter() - t0
    worker = start(
        [
            str(BIN / "celery"),
            "-A",
            "worker.celery_app",
            "worker",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ],
        env,
        tmp / "worker.log",
    )
    while " ready." not in (tmp / "worker.log").read_text():
        time.sleep(0.2)
    results: dict = {
        "backend": backend,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "api_start_s": round(api_start_s, 3),
        "load_avg_at_start": [round(v, 2) for v in os.getloadavg()],
    }
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            if args.fashion:
                results["fashion_job"] = fashion_pairs(http, env, args.epochs, args.pairs)
                results["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
            else:
                digits(http, api, env, args, results)
    finally:
        stop(worker)
        stop(api)
        if pg_db:
            import psycopg

            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
    name = f"overhead-{'fashion-' if args.fashion else ''}{backend.replace('+', '-')}"
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    (fashion_table if args.fashion else table)(results)
    print(f"written to {out.relative_to(ROOT)}")


def digits(http: httpx.Client, api: subprocess.Popen, env: dict, args, results: dict) -> None:
    """The API's own figures and the contract's digits recipe, script vs service."""
    for _ in range(20):
        http.get("/openapi.json")
        http.get("/v1/datasets")
    api_children = subprocess.run(["pgrep", "-P", str(api.pid)], capture_output=True, text=True).stdout.split()
    results["api_rss_mb"] = {"master": round(rss_mb(api.pid), 1), "worker": [round(rss_mb(int(p)), 1) for p in api_children]}

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
    results["submit_to_running_s"] = {
        "server_median": round(statistics.median(server_s), 3),
        "client_median": round(statistics.median(client_s), 3),
        "server_all": [round(v, 3) for v in server_s],
    }

    recipe = json.loads(json.dumps(CONTRACT))
    recipe["training"]["epochs"] = args.epochs
    plain, service, accuracy, plain_work, service_work = [], [], {}, [], []
    for _ in range(args.pairs):
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "bench.plain_script", str(args.epochs)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
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
        "epochs": args.epochs,
        "pairs": args.pairs,
        "plain_script_s": [round(v, 2) for v in plain],
        "service_s": [round(v, 2) for v in service],
        "median_ratio_service_over_plain": round(statistics.median(ratios), 3),
        "plain_median_s": round(statistics.median(plain), 2),
        "service_median_s": round(statistics.median(service), 2),
        "accuracy": accuracy,
        # Without process start and imports: the script's code after its imports vs the worker's
        # build + fit + evaluate (export and storage excluded).
        "plain_after_imports_median_s": round(statistics.median(plain_work), 3),
        "worker_train_median_s": round(statistics.median(service_work), 3),
    }


def fashion_pairs(http: httpx.Client, env: dict, epochs: int, pairs: int) -> dict:
    """Script then service, ``pairs`` times, so both see the same load on a shared machine."""
    import re

    recipe = json.loads(json.dumps(FASHION_MLP))
    recipe["training"]["epochs"] = epochs
    runs = []
    for _ in range(pairs):
        load_before = round(os.getloadavg()[0], 2)
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "bench.plain_script", str(epochs), "fashion_mnist"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        plain_s = time.perf_counter() - t
        script = {k: float(v) for k, v in (f.split("=") for f in out.stdout.strip().splitlines()[-1].split())}
        time.sleep(1.0)  # the worker's next child is forked: an idle worker, as for the script's fresh process
        t = time.perf_counter()
        job = http.post("/v1/jobs", json=recipe).json()
        done = wait_job(http, job["id"], {"succeeded", "failed"})
        finished = time.perf_counter()
        assert done["status"] == "succeeded", done["error"]
        http.get(f"/v1/jobs/{job['id']}/model", params={"format": "h5"}).raise_for_status()
        service_s = time.perf_counter() - t
        logs = http.get(f"/v1/jobs/{job['id']}/logs").text
        read = re.search(r"read fashion_mnist .* in ([\d.]+) s", logs)
        checkpoint = re.search(r"checkpoint: (\d+) bytes in (\d+) ms", logs)
        created, started, ended = (parse_ts(done[k]) for k in ("created_at", "started_at", "finished_at"))
        train_s = done["result"]["train_seconds"]
        runs.append(
            {
                "load_avg_1min_before": load_before,
                "plain_s": round(plain_s, 2),
                "plain_after_imports_s": script["after_imports"],
                "plain_accuracy": script["accuracy"],
                "plain_sparsity": script["sparsity"],
                "service_s": round(service_s, 2),
                "ratio": round(service_s / plain_s, 3),
                "service_accuracy": round(done["result"]["test"]["accuracy"], 4),
                "service_sparsity": done["result"]["sparsity"]["overall"],
                # where the service's time went (server timestamps, the job's own log)
                "queue_s": round((started - created).total_seconds(), 3),
                "running_s": round((ended - started).total_seconds(), 3),
                "dataset_read_s": float(read.group(1)) if read else None,
                "train_s": train_s,
                "after_training_s": round((ended - started).total_seconds() - train_s, 3),
                "finished_to_downloaded_s": round(service_s - (finished - t), 3),
                "checkpoint_first": {"bytes": int(checkpoint.group(1)), "ms": int(checkpoint.group(2))}
                if checkpoint
                else None,
            }
        )
    ratios = [r["ratio"] for r in runs]
    med = lambda key: round(statistics.median(r[key] for r in runs), 3)  # noqa: E731
    return {
        "recipe": recipe,
        "epochs": epochs,
        "pairs": pairs,
        "runs": runs,
        "median_ratio_service_over_plain": round(statistics.median(ratios), 3),
        "ratio_min_max": [min(ratios), max(ratios)],
        "plain_median_s": med("plain_s"),
        "service_median_s": med("service_s"),
        "plain_after_imports_median_s": med("plain_after_imports_s"),
        "worker_train_median_s": med("train_s"),
        "accuracy_median": {"plain": med("plain_accuracy"), "service": med("service_accuracy")},
        "sparsity": {
            "plain": sorted({r["plain_sparsity"] for r in runs}),
            "service": sorted({r["service_sparsity"] for r in runs}),
        },
    }


def fashion_table(r: dict) -> None:
    d = r["fashion_job"]
    print(f"\n{r['backend']} on {r['machine']}, load average {r['load_avg_at_start']} → {r.get('load_avg_at_end')}")
    print("  pair  script s  service s  ratio  acc script/service  sparsity  queue  read  train  after  download")
    for i, run in enumerate(d["runs"], 1):
        print(
            f"  {i:>4}  {run['plain_s']:>8}  {run['service_s']:>9}  {run['ratio']:>5}  "
            f"{run['plain_accuracy']:.4f}/{run['service_accuracy']:.4f}  {run['service_sparsity']:>8}  "
            f"{run['queue_s']:>5}  {run['dataset_read_s']}  {run['train_s']:>5}  {run['after_training_s']:>5}  "
            f"{run['finished_to_downloaded_s']:>8}"
        )
    print(
        f"  median ratio {d['median_ratio_service_over_plain']} (min {d['ratio_min_max'][0]}, max {d['ratio_min_max'][1]})"
    )


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
        (
            "script after imports / worker train",
            f"{d['plain_after_imports_median_s']:.2f} s / {d['worker_train_median_s']:.2f} s",
        ),
    ]
    print(f"\n{r['backend']} on {r['machine']}")
    for name, value in rows:
        print(f"  {name:<48} {value}")


if __name__ == "__main__":
    main()
