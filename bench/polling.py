"""How cheap is polling a job? ``python -m bench.polling``

``GET /v1/jobs/{id}`` on a finished job with 30 history rows (trained for real by a worker, which is then
stopped), with wrk on loopback (-t2 -c32, 15 s each), gunicorn ``--workers 2 --threads 4``:
(a) plain, (b) with ``If-None-Match: <its ETag>`` (the 304 path), (c) a bare Flask endpoint returning a
constant JSON (``bench/bare_app.py``) under the same gunicorn flags, measured right after (a) and (b).
On the embedded SQLite and on PostgreSQL. Target: (a) ≥ 50 % of (c)'s requests/s.

``--py-spy PATH`` adds a profiled 10 s run of (a) per backend (not part of the measured figures).

Held requests (``?wait=``), with the API as deployed (``service/gunicorn_conf.py``: 2 gthread workers):
(d) 50 clients follow one training job (20 epochs of ~0.3 s) by plain conditional polling every 0.5 s, then 50
follow a second one with ``?wait=30``: requests per job per client, and the delay from each epoch's record
(``job_epochs.finished_at``) to each client seeing it; then both again on a job whose epochs take seconds, as
a real job's do (digits, batch 1, 8 epochs: the 0.3 s epochs come faster than a 0.5 s poller asks); (e) 8
clients send plain GETs for 10 s alone, then while 200 clients hold ``?wait=30`` requests, under the deployed
threads and under ``--threads 4``.

``--sections`` picks among classic (a-c, needs wrk) and held (d, e).
Writes ``bench/results/polling.json`` (a-c) and ``bench/results/polling-wait.json`` (d, e).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

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


FOLLOWERS, HELD, PLAIN_CLIENTS, PLAIN_SECONDS = 50, 200, 8, 10
FOLLOW_RECIPE = {"name": "followed", "training.epochs": 20, "training.batch_size": 1}
#: Epochs of a few seconds, as a real job's are (the 0.3 s ones above come faster than a 0.5 s poller asks).
SLOW_RECIPE = {
    "name": "followed-slow",
    "dataset.name": "digits",
    "model.input_shape": [64],
    "model.layers": [
        {"type": "dense", "units": 32, "activation": "relu", "kernel_initializer": "he_normal"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
    "training.epochs": 8,
    "training.batch_size": 1,
}
FOLLOWED = {"": FOLLOW_RECIPE, "slow_": SLOW_RECIPE}
TERMINAL = ("succeeded", "failed", "cancelled")


async def _follow(client, path: str, mode: str, seen: dict[int, float]) -> int:
    """One client following a job to its end; returns its request count, fills ``seen`` (epoch -> wall time)."""
    etag, requests = None, 0
    if mode == "plain":
        await asyncio.sleep(random.uniform(0, 0.5))  # pollers are not in step with each other
    while True:
        headers = {"If-None-Match": etag} if etag else {}
        params = {"wait": 30} if mode == "wait" and etag else None
        requests += 1
        try:
            answer = await client.get(path, headers=headers, params=params)
        except httpx.TransportError:  # a keep-alive connection the server had just closed: ask again, as clients do
            continue
        if answer.status_code == 200:
            now, body = time.time(), answer.json()
            etag = answer.headers["ETag"]
            for row in body["history"]:
                seen.setdefault(row["epoch"], now)
            if body["status"] in TERMINAL:
                return requests
        if mode == "plain":
            await asyncio.sleep(0.5)


def follow(b: h.Backend, url: str, mode: str, recipe: dict) -> dict:
    """(d): FOLLOWERS clients follow one fresh job of ``recipe`` (``small_recipe`` overrides)."""
    from sqlalchemy import select

    from core.db import Database
    from core.models import EpochRecord

    async def run() -> tuple[str, list[int], list[dict[int, float]]]:
        limits = httpx.Limits(max_connections=FOLLOWERS + 10, max_keepalive_connections=FOLLOWERS + 10)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            job = (await client.post("/v1/jobs", json=small_recipe(**recipe))).json()
            seen: list[dict[int, float]] = [{} for _ in range(FOLLOWERS)]
            counts = await asyncio.gather(*(_follow(client, f"/v1/jobs/{job['id']}", mode, s) for s in seen))
            return job["id"], list(counts), seen

    job_id, counts, seen = asyncio.run(run())
    db = Database(b.settings())
    with db.session() as session:
        recorded = {
            e: t.timestamp()
            for e, t in session.execute(
                select(EpochRecord.epoch, EpochRecord.finished_at).where(EpochRecord.job_id == job_id)
            )
        }
    db.engine.dispose()
    delays = [1000 * (client[e] - at) for client in seen for e, at in recorded.items() if e in client]
    return {
        "mode": "plain conditional GET every 0.5 s" if mode == "plain" else "?wait=30 with If-None-Match",
        "epochs": len(recorded),
        "epoch_s_p50": round(h.median([b - a for a, b in zip(sorted(recorded.values()), sorted(recorded.values())[1:])]), 2),
        "requests_per_client_per_job": round(h.median(counts), 1),
        "requests_total": sum(counts),
        "delay_ms_p50": round(h.pct(delays, 50), 1),
        "delay_ms_p90": round(h.pct(delays, 90), 1),
        "delay_ms_max": round(max(delays), 1),
        "epochs_missed_per_client": round(h.median([len(recorded) - len(c) for c in seen]), 1),
    }


async def _plain_load(client, path: str, seconds: float) -> list[float]:
    """Latencies in ms; a request not answered within 35 s (starved) counts as 35 s."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def one():
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                answer = await client.get(path, timeout=35)
                assert answer.status_code == 200, answer.status_code
            except httpx.TimeoutException:
                pass
            latencies.append(1000 * (time.perf_counter() - t))

    await asyncio.gather(*(one() for _ in range(PLAIN_CLIENTS)))
    return latencies


def starve(url: str, job_id: str) -> dict:
    """(e): plain GET latency alone, then while HELD requests are held on the same (finished) job."""

    path = f"/v1/jobs/{job_id}"

    def summary(lat: list[float]) -> dict:
        return {
            "requests": len(lat),
            "requests_per_s": round(len(lat) / PLAIN_SECONDS, 1),
            "p50_ms": round(h.pct(lat, 50), 1),
            "p99_ms": round(h.pct(lat, 99), 1),
            "max_ms": round(max(lat), 1),
        }

    async def run() -> dict:
        limits = httpx.Limits(max_connections=HELD + PLAIN_CLIENTS + 10, max_keepalive_connections=HELD + PLAIN_CLIENTS + 10)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            etag = (await client.get(path)).headers["ETag"]
            alone = await _plain_load(client, path, PLAIN_SECONDS)
            stop = asyncio.Event()

            async def hold():
                while not stop.is_set():
                    try:
                        await client.get(path, params={"wait": 30}, headers={"If-None-Match": etag})
                    except httpx.HTTPError:  # starved past the client's timeout (the 2 x 4 threads case)
                        pass

            holders = [asyncio.create_task(hold()) for _ in range(HELD)]
            await asyncio.sleep(3)  # every held request is in
            loaded = await _plain_load(client, path, PLAIN_SECONDS)
            stop.set()
            for task in holders:
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
            return {"plain_alone": summary(alone), f"plain_while_{HELD}_held": summary(loaded)}

    return asyncio.run(run())


def run_held(name: str) -> dict:
    """(d) and (e) on one backend, the API as deployed (and (e) once more with ``--threads 4``)."""
    out: dict = {}
    with h.backend(name) as b:
        worker = h.start_worker(b, "follow")
        api, url = start_gunicorn(b.env, b.tmp / "api-deployed.log", [])
        try:
            for prefix, recipe in FOLLOWED.items():
                for mode in ("plain", "wait"):
                    out[f"d_{prefix}follow_{mode}"] = follow(b, url, mode, recipe)
            worker.stop()
            with httpx.Client(base_url=url) as http:
                job_id = http.get("/v1/jobs?limit=1").json()["items"][0]["id"]
            out["e_deployed_gthread_2x256"] = starve(url, job_id)
        finally:
            worker.stop()
            api.stop()
        api, url = start_gunicorn(b.env, b.tmp / "api-threads4.log", ["--threads", "4"])
        try:
            out["e_threads_2x4"] = starve(url, job_id)
        finally:
            api.stop()
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
    parser.add_argument("--sections", default="classic,held")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if "classic" in sections:
        classic(args)
    if "held" in sections:
        held_only(args.backends.split(","))


def classic(args) -> None:
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


def held_only(names: list[str]) -> None:
    """(d) and (e) (no wrk needed): ``--sections held``; written to bench/results/polling-wait.json."""
    results: dict = {**h.machine(), "gunicorn": "service/gunicorn_conf.py (2 gthread workers x 256 threads)"}
    for name in names:
        results[name] = run_held(name)
    out = h.write("polling-wait", results)
    print_held(results, names)
    print(f"\nwritten to {out.relative_to(h.ROOT)}")


def print_held(results: dict, names: list[str]) -> None:
    rows = []
    for name in names:
        for key in ("d_follow_plain", "d_follow_wait", "d_slow_follow_plain", "d_slow_follow_wait"):
            r = results[name][key]
            rows.append(
                [
                    f"{name}, epochs of {r['epoch_s_p50']} s: {r['mode']}",
                    r["requests_per_client_per_job"],
                    r["delay_ms_p50"],
                    r["delay_ms_p90"],
                    r["delay_ms_max"],
                ]
            )
    h.table(
        f"(d) {FOLLOWERS} clients follow a {FOLLOW_RECIPE['training.epochs']}-epoch job, then a "
        f"{SLOW_RECIPE['training.epochs']}-epoch one with longer epochs "
        f"(load avg at start {results['load_avg_at_start']})",
        ["", "requests/client/job", "delay p50 ms", "p90 ms", "max ms"],
        rows,
    )
    rows = []
    for name in names:
        for key, label in (
            ("e_deployed_gthread_2x256", "2 workers x 256 threads"),
            ("e_threads_2x4", "2 workers x 4 threads"),
        ):
            for phase, r in results[name][key].items():
                rows.append([f"{name} {label}: {phase}", r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["max_ms"]])
    h.table(
        f"(e) {PLAIN_CLIENTS} clients sending plain GETs for {PLAIN_SECONDS} s, alone and while {HELD} requests are held",
        ["", "req/s", "p50 ms", "p99 ms", "max ms"],
        rows,
    )


if __name__ == "__main__":
    main()
