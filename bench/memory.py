"""Where does memory go? ``python -m bench.memory``

- API (gunicorn ``--workers 2 --threads 4``): RSS of master and workers idle, then peak and after during
  wrk -t2 -c32 for 20 s on ``GET /v1/jobs/{id}``.
- Worker (``celery ... --concurrency 1``): the parent's RSS idle and after each job; while 3 sequential jobs
  of ``examples/recipes/contract-digits.json`` (10 epochs each) train, the children's VmRSS and private pages are
  read from /proc every 20 ms: peak per job, and the child pid of each job (from /proc and from the job's
  "attempt 1 on host:pid" log line) — a fresh child per job means three different pids. VmRSS of a forked
  child counts pages it still shares with the parent (TensorFlow, imported once there); its private pages
  (USS: Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup) are what the job itself costs.
- Hostile uploads (``tests/hostile_uploads.py``: zip bombs, GB headers, lying zip entries, huge labels and CSV
  fields): the API workers' peak RSS while each is refused, and its rise (issue 11: under 100 MB).
- GPU memory: ``nvidia-smi`` before, at each job's peak and after; "not measured" when it is absent.

Embedded SQLite by default (``--backend postgres`` for PostgreSQL + Redis). Writes ``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import threading
import time

import httpx

from bench import harness as h
from stack.jobs import wait_for
from stack.processes import children_of
from tests import hostile_uploads

CONTRACT = json.loads((h.ROOT / "examples" / "recipes" / "contract-digits.json").read_text())
PARENT_GROWTH_LIMIT_MB = 5  # "does not grow": allowing allocator noise
BOMB_RISE_LIMIT_MB = 100  # issue 11: the API's RSS stays flat (within 100 MB) while it refuses every bomb


def mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def gpu_used_mb() -> list[int] | None:
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True
    ).stdout
    return [int(v) for v in out.split()]


class GpuPeak:
    def __init__(self):
        self.peak: list[int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            used = gpu_used_mb()
            if used is not None:
                self.peak = used if self.peak is None else [max(a, b) for a, b in zip(self.peak, used)]
            self._stop.wait(0.2)

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def settle_rss(pid: int, seconds: float = 1.0) -> float:
    time.sleep(seconds)
    return mb(h.status_rss_kb(pid))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    results: dict = {**h.machine(), "backend": args.backend, "gunicorn": " ".join(h.GUNICORN_FLAGS)}
    recipe = json.loads(json.dumps(CONTRACT))
    recipe["training"]["epochs"] = args.epochs
    with h.backend(args.backend) as b:
        worker = h.start_worker(b, "mem")
        api, url = h.start_api(b)
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                for _ in range(20):
                    http.get("/v1/datasets").raise_for_status()
                time.sleep(2)
                results["api_idle_mb"] = {
                    "master": mb(h.status_rss_kb(api.pid)),
                    "workers": [mb(h.status_rss_kb(p)) for p in api.children()],
                }
                idle_children = worker.children()
                results["worker_idle_mb"] = {
                    "parent": mb(h.status_rss_kb(worker.pid)),
                    "children": {
                        str(p): {"vmrss_mb": mb(h.status_rss_kb(p)), "uss_mb": mb(h.uss_kb(p))} for p in idle_children
                    },
                }
                results["gpu_idle_mb"] = gpu_used_mb()

                jobs_out, job_ids = [], []
                for _ in range(args.jobs):
                    parent_before = mb(h.status_rss_kb(worker.pid))
                    waiting_child = worker.children()
                    with h.RssSampler(lambda: children_of(worker.pid), 0.02, uss=True) as sampler, GpuPeak() as gpu:
                        posted = http.post("/v1/jobs", json=recipe)
                        if posted.status_code != 202:
                            raise RuntimeError(f"POST /v1/jobs: {posted.status_code} {posted.text[:1000]}")
                        job = posted.json()
                        done = wait_for(http, job["id"], timeout=300, poll=0.2)
                        time.sleep(0.3)  # the child exits after storing the job
                    logs = http.get(f"/v1/jobs/{job['id']}/logs").text
                    m = re.search(r"attempt 1 on [^:\s]+:(\d+)", logs)
                    log_pid = int(m.group(1)) if m else None
                    job_ids.append(job["id"])
                    parent_after = settle_rss(worker.pid)
                    child_peaks = {
                        str(p): {"vmrss_mb": mb(kb), "uss_mb": mb(sampler.peak_uss_kb.get(p))}
                        for p, kb in sampler.peak_kb.items()
                    }
                    ran = child_peaks.get(str(log_pid), {})
                    jobs_out.append(
                        {
                            "job": job["id"],
                            "status": done["status"],
                            "accuracy": (done.get("result") or {}).get("test", {}).get("accuracy"),
                            "child_pid_from_log": log_pid,
                            "child_waiting_before": waiting_child,
                            "children_seen": child_peaks,
                            "peak_vmrss_mb": ran.get("vmrss_mb"),
                            "peak_uss_mb": ran.get("uss_mb"),
                            "parent_before_mb": parent_before,
                            "parent_after_mb": parent_after,
                            "gpu_peak_mb": gpu.peak,
                            "samples": sampler.samples,
                        }
                    )
                results["jobs"] = jobs_out
                pids = [j["child_pid_from_log"] for j in jobs_out]
                results["fresh_child_per_job"] = len(set(pids)) == len(pids) and None not in pids
                parent = [jobs_out[0]["parent_before_mb"]] + [j["parent_after_mb"] for j in jobs_out]
                results["parent_growth_mb"] = round(parent[-1] - parent[0], 1)
                results["parent_grows"] = results["parent_growth_mb"] > PARENT_GROWTH_LIMIT_MB
                worker.stop()  # the API is measured alone

                path = f"/v1/jobs/{job_ids[0]}"
                http.get(path).raise_for_status()
                results["api_before_load_mb"] = {str(p): mb(h.status_rss_kb(p)) for p in api.children()}
                with h.RssSampler(api.children, interval=0.02) as sampler:
                    results["api_load_wrk"] = h.wrk(url + path, args.seconds)
                results["api_load_peak_mb"] = {str(p): mb(kb) for p, kb in sampler.peak_kb.items()}
                results["api_after_load_mb"] = {str(p): settle_rss(p, 0) for p in api.children()}
                results["api_master_after_load_mb"] = mb(h.status_rss_kb(api.pid))
                results["bombs"] = refuse_bombs(http, api)
        finally:
            worker.stop()
            api.stop()
    results["gpu"] = "measured" if shutil.which("nvidia-smi") else "no GPU on this machine: not measured"
    out = h.write("memory", results)
    report(results, args)
    print(f"\nwritten to {out.relative_to(h.ROOT)}")


def refuse_bombs(http: httpx.Client, api: h.Proc) -> dict:
    """The API workers' RSS while each hostile upload of ``tests/hostile_uploads.py`` is refused: before, the
    peak while the request ran (sampled every 10 ms) and the rise, which must stay under 100 MB."""
    rows = []
    for case in hostile_uploads.cases():
        before = {p: h.status_rss_kb(p) for p in api.children()}
        with h.RssSampler(api.children, interval=0.01) as sampler:
            response = http.post("/v1/datasets", files={"file": (case.filename, case.data)}, data=case.form)
        rise = max(sampler.peak_kb.get(p, kb) - kb for p, kb in before.items())
        rows.append(
            {
                "bomb": case.name,
                "upload_bytes": len(case.data),
                "status": response.status_code,
                "peak_mb": mb(max(sampler.peak_kb.values())),
                "rise_mb": mb(max(rise, 0)),
            }
        )
    return {
        "cases": rows,
        "max_rise_mb": max(r["rise_mb"] for r in rows),
        "limit_mb": BOMB_RISE_LIMIT_MB,
        "all_4xx": all(400 <= r["status"] < 500 for r in rows),
        "after_mb": {str(p): settle_rss(p, 0.5) for p in api.children()},
    }


def report(r: dict, args) -> None:
    rows = [
        ["API master, idle", r["api_idle_mb"]["master"], ""],
        ["API workers, idle", " / ".join(map(str, r["api_idle_mb"]["workers"])), ""],
        ["API workers, before load", " / ".join(map(str, r["api_before_load_mb"].values())), ""],
        [
            f"API workers, peak under wrk {args.seconds} s",
            " / ".join(map(str, r["api_load_peak_mb"].values())),
            f"{r['api_load_wrk']['requests_per_s']:.0f} req/s, {r['api_load_wrk']['non_2xx']} non-2xx",
        ],
        ["API workers, after load", " / ".join(map(str, r["api_after_load_mb"].values())), ""],
        ["worker parent, idle", r["worker_idle_mb"]["parent"], ""],
        [
            "worker child, idle (VmRSS / USS)",
            " ".join(f"{v['vmrss_mb']} / {v['uss_mb']}" for v in r["worker_idle_mb"]["children"].values()),
            "",
        ],
    ]
    for i, j in enumerate(r["jobs"], 1):
        rows.append(
            [
                f"job {i}: child peak VmRSS / USS",
                f"{j['peak_vmrss_mb']} / {j['peak_uss_mb']}",
                f"pid {j['child_pid_from_log']}, {j['status']}, acc {j['accuracy']}",
            ]
        )
        rows.append([f"job {i}: parent before -> after", f"{j['parent_before_mb']} -> {j['parent_after_mb']}", ""])
    rows.append(["fresh child per job", "yes" if r["fresh_child_per_job"] else "NO", ""])
    rows.append(
        [
            "parent growth over the jobs",
            f"{r['parent_growth_mb']} MB",
            "grows" if r["parent_grows"] else f"does not grow (<= {PARENT_GROWTH_LIMIT_MB} MB)",
        ]
    )
    h.table(
        f"RSS in MB, {r['backend']}, contract digits {args.epochs} epochs x {args.jobs} jobs "
        f"(load avg at start {r['load_avg_at_start']})",
        ["", "MB", "note"],
        rows,
    )
    print(f"\nGPU: {r['gpu']}")
    b = r["bombs"]
    h.table(
        f"API worker RSS while refusing each hostile upload (rise limit {b['limit_mb']} MB; largest rise "
        f"{b['max_rise_mb']} MB; every answer 4xx: {'yes' if b['all_4xx'] else 'NO'})",
        ["bomb", "upload", "status", "peak MB", "rise MB"],
        [[c["bomb"], f"{c['upload_bytes'] / 1024:,.0f} KiB", c["status"], c["peak_mb"], c["rise_mb"]] for c in b["cases"]],
    )


if __name__ == "__main__":
    main()
