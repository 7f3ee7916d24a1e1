"""How cheap is polling a job? ``python -m bench.polling``

``GET /v1/jobs/{id}`` on a finished job with 30 history rows (trained for real by a worker, which is then
stopped), with wrk on loopback (-t2 -c32, 15 s each), gunicorn ``--workers 2 --threads 4``:
(a) plain, (b) with ``If-None-Match: <its ETag>`` (the 304 path), (c) a bare Flask endpoint returning a
constant JSON (``bench/bare_app.py``) under the same gunicorn flags, measured right after (a) and (b).
On the embedded SQLite and on PostgreSQL. Target: (a) ≥ 50 % of (c)'s requests/s.

``--py-spy PATH`` adds a profiled 10 s run of (a) per backend (not part of the measured figures).
Writes ``bench/results/polling.json``.
"""

from __future__ import annotations

import argparse
import json

import httpx

from bench import harness as h
from stack.jobs import wait_for
from stack.processes import start_gunicorn
from stack.recipes import small_recipe

IF_NONE_MATCH_LUA = 'wrk.headers["If-None-Match"] = %s\n'
TARGET = 0.5


def breakdown(b: h.Backend, job_id: str, etag: str, repeat: int = 300) -> dict:
    """One request's server time, single thread, in this process (Flask test clients, no sockets): the whole
    request, and its parts as core does them, plus two alternatives (marked "what if"). Median ms."""
    import time
    from dataclasses import replace

    from flask import json as fjson
    from sqlalchemy import select

    from bench.bare_app import create_app as bare_app
    from core import jobs
    from core.models import EpochRecord, Job
    from service.app import create_app
    from service.representation import job_body

    settings = replace(b.settings(), single_user=True, log_level="WARNING")
    app = create_app(settings)
    db = app.extensions["trainer"].db
    api, bare = app.test_client(), bare_app().test_client()
    path = f"/v1/jobs/{job_id}"

    def timed(fn) -> float:
        for _ in range(20):
            fn()
        samples = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        return round(h.median(samples) * 1000, 3)

    def in_session(fn):
        def run():
            with db.session() as session:
                fn(session)

        return run

    with db.session() as session:
        job = jobs.get(session, job_id, "default")
        rows, models = jobs.history(session, job_id), jobs.model_artifacts(session, job_id)
    out = {
        "bare_flask_const": timed(lambda: bare.get("/const")),
        "api_get_200": timed(lambda: api.get(path)),
        "api_get_304": timed(lambda: api.get(path, headers={"If-None-Match": etag})),
        "session + SELECT 1 (the floor of any query)": timed(in_session(lambda s: s.execute(select(1)).scalar())),
        "jobs.get": timed(in_session(lambda s: jobs.get(s, job_id, "default"))),
        "jobs.history": timed(in_session(lambda s: jobs.history(s, job_id))),
        "jobs.model_artifacts": timed(in_session(lambda s: jobs.model_artifacts(s, job_id))),
        "job_body + json.dumps": timed(lambda: fjson.dumps(job_body(job, rows, models))),
        "what if: select Job.version only": timed(
            in_session(lambda s: s.execute(select(Job.version).where(Job.id == job_id, Job.owner == "default")).scalar_one())
        ),
        "what if: history without the diagnostics column": timed(
            in_session(
                lambda s: s.execute(
                    select(EpochRecord.epoch, EpochRecord.phase, EpochRecord.attempt, EpochRecord.metrics)
                    .where(EpochRecord.job_id == job_id)
                    .order_by(EpochRecord.epoch)
                ).all()
            )
        ),
    }
    with db.session() as session:
        diag = [
            len(fjson.dumps(r.diagnostics))
            for r in session.execute(select(EpochRecord).where(EpochRecord.job_id == job_id)).scalars()
        ]
    out["diagnostics_bytes_per_epoch_row"] = round(h.median(diag)) if diag else 0
    db.engine.dispose()
    return out


def run_backend(name: str, seconds: int, py_spy: str | None) -> dict:
    with h.backend(name) as b:
        worker = h.start_worker(b, "poll")
        api, url = h.start_api(b)
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                job = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 30})).json()
                done = wait_for(http, job["id"], timeout=300, poll=0.1)
                assert done["status"] == "succeeded", done["error"]
                worker.stop()  # nothing else runs while the API is measured
                path = f"/v1/jobs/{job['id']}"
                first = http.get(path)
                etag = first.headers["ETag"]
                assert http.get(path, headers={"If-None-Match": etag}).status_code == 304
                for _ in range(50):
                    http.get(path)
            lua = b.tmp / "if-none-match.lua"
            lua.write_text(IF_NONE_MATCH_LUA % json.dumps(etag))
            out = {"history_rows": len(done["history"]), "body_bytes": len(first.content), "etag": etag}
            out["breakdown_ms"] = breakdown(b, job["id"], etag)
            out["a_plain"] = h.wrk(url + path, seconds)
            out["b_if_none_match_304"] = h.wrk(url + path, seconds, script=lua)
            if py_spy:
                prof = h.profile(
                    api.pid, 10, h.PROFILES / f"polling-{name}.txt", py_spy, load=["wrk", "-t2", "-c32", "-d12s", url + path]
                )
                out["profile_a"] = prof
        finally:
            worker.stop()
            api.stop()
        bare, bare_url = start_gunicorn(b.env, b.tmp / "bare.log", h.GUNICORN_FLAGS, app="bench.bare_app:create_app()")
        try:
            out["bare_body_bytes"] = len(httpx.get(bare_url + "/const").content)
            out["c_bare_flask"] = h.wrk(bare_url + "/const", seconds)
        finally:
            bare.stop()
    a, c = out["a_plain"]["requests_per_s"], out["c_bare_flask"]["requests_per_s"]
    out["a_over_c"] = round(a / c, 3)
    out["target_a_ge_half_c"] = "met" if a / c >= TARGET else "not met"
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile (a) once more per backend")
    args = parser.parse_args()
    results = {
        **h.machine(),
        "gunicorn": " ".join(h.GUNICORN_FLAGS),
        "wrk": f"-t2 -c32 -d{args.seconds}s",
        "target": "(a) plain req/s >= 50 % of (c) bare Flask req/s",
    }
    for name in args.backends.split(","):
        results[name] = run_backend(name, args.seconds, args.py_spy)
    out = h.write("polling", results)
    rows = []
    for name in args.backends.split(","):
        r = results[name]
        for key, label in (
            ("a_plain", "(a) GET job, 200"),
            ("b_if_none_match_304", "(b) If-None-Match, 304"),
            ("c_bare_flask", "(c) bare Flask /const"),
        ):
            w = r[key]
            rows.append(
                [
                    f"{name} {label}",
                    f"{w['requests_per_s']:.0f}",
                    f"{w['p50_ms']:.1f}",
                    f"{w['p99_ms']:.1f}",
                    w["non_2xx"] + w["socket_errors"],
                ]
            )
        rows.append([f"{name} (a)/(c) = {r['a_over_c']:.2f}: target >= 0.5 {r['target_a_ge_half_c']}", "", "", "", ""])
    h.table(
        f"GET /v1/jobs/{{id}}, 30 history rows ({results['wrk']}, gunicorn {results['gunicorn']}, "
        f"load avg at start {results['load_avg_at_start']})",
        ["", "req/s", "p50 ms", "p99 ms", "errors"],
        rows,
    )
    names = args.backends.split(",")
    keys = list(results[names[0]]["breakdown_ms"])
    h.table(
        "one request, single thread, in process (Flask test client), median ms",
        ["", *names],
        [[k, *[results[n]["breakdown_ms"][k] for n in names]] for k in keys],
    )
    for name in args.backends.split(","):
        if results[name].get("profile_a"):
            h.print_profile(f"{name} (a)", results[name]["profile_a"])
    print(f"\nwritten to {out.relative_to(h.ROOT)}")


if __name__ == "__main__":
    main()
