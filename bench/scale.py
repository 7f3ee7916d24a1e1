"""Does throughput scale, and is every job trained exactly once? ``python -m bench.scale``

N small jobs (``stack.recipes.small_recipe()``, 2 epochs, h5 only) are POSTed at once (16 client threads)
to an API with two Celery worker processes (``--concurrency 1`` each, different ``--hostname``) on
PostgreSQL + Redis (``--embedded``: also on SQLite + the SQLAlchemy broker). Rounds of 50 and then 200 jobs
on the same processes (the 50 round is the linearity reference). Every job must succeed with
``attempt == 1`` and exactly one "attempt 1 on" line in ``GET /v1/jobs/{id}/logs``.

Reports wall time (first POST sent → last job finished), jobs/minute, per-job cost (wall / N), queue wait
(``started_at - created_at``) p50/p99, run time (``finished_at - started_at``) p50, and duplicate
deliveries the workers skipped ("is not queued; nothing to do") and the jobs the reconciler sent again (a job
queued longer than ``TRAINER_REDISPATCH_AFTER_S`` is re-sent only when the broker lost its message:
``core.backlog``). Writes ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
from sqlalchemy import func, select

from bench import harness as h
from stack.recipes import small_recipe

RECIPE = small_recipe(**{"training.epochs": 2, "export.formats": ["h5"]})
FINISHED = ("succeeded", "failed", "cancelled")
PROFILE = h.PROFILES / "scale-worker.txt"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def run_round(b: h.Backend, db, url: str, n: int, workers: list[h.Proc]) -> dict:
    from core.models import Job

    skipped_before = sum(w.log().count("is not queued; nothing to do") for w in workers)
    resent_before = sum(w.log().count(": sending again") for w in workers)
    kept_before = sum(w.log().count("still in the broker's queue: not sent again") for w in workers)
    trained_before = {w.log_path.stem: w.log().count(": 'succeeded'") for w in workers}
    with httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=16)) as http:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: http.post("/v1/jobs", json=RECIPE), range(n)))
        submit_s = time.perf_counter() - t0
        bad = [r.status_code for r in responses if r.status_code != 202]
        if bad:
            raise RuntimeError(f"{len(bad)} submissions refused: {bad[:5]} {responses[0].text[:500]}")
        ids = [r.json()["id"] for r in responses]
        deadline = time.monotonic() + 60 + 6 * n  # ~8x the expected time: a stall is reported, not waited out
        timed_out = False
        while True:
            with db.session() as session:
                done = session.scalar(select(func.count()).select_from(Job).where(Job.id.in_(ids), Job.status.in_(FINISHED)))
            if done == n:
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.25)
        client_wall_s = time.perf_counter() - t0
        jobs = [http.get(f"/v1/jobs/{i}").json() for i in ids]
        logs = {i: http.get(f"/v1/jobs/{i}/logs").text for i in ids}
    skipped = sum(w.log().count("is not queued; nothing to do") for w in workers) - skipped_before
    resent = sum(w.log().count(": sending again") for w in workers) - resent_before
    kept = sum(w.log().count("still in the broker's queue: not sent again") for w in workers) - kept_before
    created = [ts(j["created_at"]) for j in jobs]
    started = [ts(j["started_at"]) for j in jobs if j["started_at"]]
    finished = [ts(j["finished_at"]) for j in jobs if j["finished_at"]]
    waits = [(ts(j["started_at"]) - ts(j["created_at"])).total_seconds() for j in jobs if j["started_at"]]
    runs = [(ts(j["finished_at"]) - ts(j["started_at"])).total_seconds() for j in jobs if j["finished_at"]]
    wall = (max(finished) - min(created)).total_seconds() if finished else float("nan")
    statuses: dict[str, int] = {}
    for j in jobs:
        statuses[j["status"]] = statuses.get(j["status"], 0) + 1
    first_lines = {i: text.count("attempt 1 on") for i, text in logs.items()}
    per_worker = {w.log_path.stem: w.log().count(": 'succeeded'") - trained_before[w.log_path.stem] for w in workers}
    return {
        "jobs": n,
        "statuses": statuses,
        "timed_out": timed_out,
        "all_succeeded": statuses.get("succeeded", 0) == n,
        "attempt_not_1": [j["id"] for j in jobs if j["attempt"] != 1],
        "log_attempt1_lines_not_1": {i: c for i, c in first_lines.items() if c != 1},
        "log_attempt2_lines": sum(text.count("attempt 2") for text in logs.values()),
        "duplicate_deliveries_skipped": skipped,
        "resent_by_reconciler": resent,
        "reconciler_rounds_that_found_stale_jobs_still_queued": kept,
        "submit_all_s": round(submit_s, 2),
        "wall_s": round(wall, 2),
        "client_wall_s": round(client_wall_s, 2),
        "jobs_per_minute": round(len(finished) / wall * 60, 1),
        "seconds_per_job": round(wall / len(finished), 3),
        "queue_wait_p50_s": round(h.pct(waits, 50), 2),
        "queue_wait_p99_s": round(h.pct(waits, 99), 2),
        "queue_wait_max_s": round(max(waits), 2),
        "never_started": n - len(started),
        "run_p50_s": round(h.pct(runs, 50), 3),
        "run_p99_s": round(h.pct(runs, 99), 3),
        "span_first_start_to_last_finish_s": round((max(finished) - min(started)).total_seconds(), 2) if finished else None,
        "succeeded_per_worker": per_worker,
    }


def run_backend(name: str, rounds: list[int], py_spy: str | None = None) -> dict:
    from core.db import Database

    # the queue is what is measured: no per-job inference measurement (a few seconds of each small job)
    with h.backend(name, TRAINER_MAX_QUEUED_PER_OWNER=100000, TRAINER_INFERENCE="off") as b:
        workers: list[h.Proc] = []
        api = None
        db = Database(b.settings())
        try:
            workers += [h.start_worker(b, "scale-a")]
            workers += [h.start_worker(b, "scale-b")]
            api, url = h.start_api(b)
            profiler = None
            PROFILE.parent.mkdir(parents=True, exist_ok=True)
            if py_spy:  # one worker and its children, from 5 s into the first round, for 30 s
                profiler = subprocess.Popen(
                    [
                        "sh",
                        "-c",
                        f"sleep 5; exec {py_spy} record --subprocesses --nonblocking "
                        f"--format raw -r 100 -d 30 -p {workers[0].pid} -o {PROFILE}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            out = {f"n{n}": run_round(b, db, url, n, workers) for n in rounds}
            if profiler:
                profiler.wait()
                out["profile_worker"] = h.summarize_profile(PROFILE)
        finally:
            db.engine.dispose()
            if api is not None:
                api.stop()
            for w in workers:
                w.stop()
    if len(rounds) > 1:
        small, big = out[f"n{rounds[0]}"], out[f"n{rounds[-1]}"]
        out["per_job_cost_ratio_big_over_small"] = round(big["seconds_per_job"] / small["seconds_per_job"], 3)
    out["exactly_once"] = all(
        r["all_succeeded"] and not r["attempt_not_1"] and not r["log_attempt1_lines_not_1"]
        for k, r in out.items()
        if k.startswith("n")
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", default="50,200", help="rounds, in order, on the same processes")
    parser.add_argument("--embedded", action="store_true", help="also run on SQLite + the SQLAlchemy broker")
    parser.add_argument("--out", default="scale", help="results file name: bench/results/<out>.json")
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile one worker for 30 s of the first round")
    args = parser.parse_args()
    rounds = [int(n) for n in args.jobs.split(",")]
    names = ["postgres"] + (["sqlite"] if args.embedded else [])
    results = {
        **h.machine(),
        "recipe": "stack.recipes.small_recipe(), 2 epochs, h5, TRAINER_INFERENCE=off",
        "workers": "2 × concurrency 1",
        "gunicorn": " ".join(h.GUNICORN_FLAGS),
    }
    for name in names:
        results[name] = run_backend(name, rounds, args.py_spy if name == "postgres" else None)
    out = h.write(args.out, results)
    rows = []
    for name in names:
        for n in rounds:
            r = results[name][f"n{n}"]
            rows.append(
                [
                    f"{name} {n} jobs",
                    r["wall_s"],
                    r["jobs_per_minute"],
                    r["seconds_per_job"],
                    r["queue_wait_p50_s"],
                    r["queue_wait_p99_s"],
                    r["run_p50_s"],
                    f"{r['statuses'].get('succeeded', 0)}/{n}",
                    r["duplicate_deliveries_skipped"],
                    r["resent_by_reconciler"],
                ]
            )
        extra = results[name].get("per_job_cost_ratio_big_over_small")
        rows.append(
            [
                f"{name}: exactly once {'yes' if results[name]['exactly_once'] else 'NO'}"
                + (f"; per-job cost {rounds[-1]}/{rounds[0]} = {extra}" if extra else ""),
                *[""] * 9,
            ]
        )
    h.table(
        f"{results['workers']} workers, {results['recipe']} (load avg at start {results['load_avg_at_start']})",
        ["", "wall s", "jobs/min", "s/job", "wait p50", "wait p99", "run p50", "ok", "dup skipped", "resent"],
        rows,
    )
    if results["postgres"].get("profile_worker"):
        h.print_profile("postgres worker scale-a and its children", results["postgres"]["profile_worker"])
    print(f"\nwritten to {out.relative_to(h.ROOT)}")


if __name__ == "__main__":
    main()
