"""How fast, and how lean, is a model download? ``python -m bench.download``

A succeeded job whose h5 model is 100 MB of random bytes, stored with ``core.artifacts.store`` (4 MiB chunks)
in one transaction, streamed by ``GET /v1/jobs/{id}/model`` from PostgreSQL and from the embedded SQLite,
next to Flask ``send_file`` of the same bytes from local disk (``bench/bare_app.py`` ``/file``), both under
gunicorn ``--workers 2 --threads 4`` on loopback, downloaded by curl to a file. 3 downloads each, median;
each download's sha256 is checked. While each runs, VmRSS of the gunicorn worker processes is read every
20 ms: the rise is the peak minus that worker's RSS just before the download.

Targets: API MB/s ≥ 70 % of send_file's; RSS rise < 50 MB. ``--py-spy PATH`` profiles extra API downloads.
Writes ``bench/results/download.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import uuid

import httpx

from bench import harness as h
from stack.processes import start_gunicorn
from stack.recipes import small_recipe

SIZE = 100 * 1000 * 1000
RUNS = 3
TARGET_SPEED, TARGET_RSS_MB = 0.7, 50


def make_file(path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def insert_job_with_model(b: h.Backend, path) -> tuple[str, str]:
    """A succeeded Job row and its 100 MB h5 artifact, in one transaction, through core's own functions."""
    from core import artifacts
    from core.db import Database
    from core.models import Job, JobStatus, utcnow
    from core.recipe import Recipe

    settings = b.settings()
    db = Database(settings)
    recipe = Recipe.model_validate(small_recipe()).model_dump(mode="json")
    job_id, now = uuid.uuid4().hex, utcnow()
    with db.session() as session, path.open("rb") as source:
        session.add(
            Job(
                id=job_id,
                owner="default",
                name="bench-download",
                status=JobStatus.SUCCEEDED.value,
                recipe=recipe,
                attempt=1,
                created_at=now,
                started_at=now,
                finished_at=now,
                progress={"epoch": 5, "epochs": 5, "phase": "succeeded"},
                result={},
            )
        )
        session.flush()
        artifact = artifacts.store(
            session,
            source,
            kind="model",
            format="h5",
            filename=f"{job_id}-model.h5",
            chunk_bytes=settings.artifact_chunk_bytes,
            job_id=job_id,
        )
        sha = artifact.sha256
    db.engine.dispose()
    return job_id, sha


def download(server: h.Proc, url: str, target, expected_sha: str) -> dict:
    workers = server.children()
    idle = {pid: h.status_rss_kb(pid) for pid in workers}
    with h.RssSampler(lambda: workers, interval=0.02) as sampler:
        out = subprocess.run(
            ["curl", "-s", "-o", str(target), "-w", "%{http_code} %{size_download} %{time_total}", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    code, size, seconds = out.split()
    got = hashlib.sha256(target.read_bytes()).hexdigest()
    target.unlink()
    rise = {pid: (sampler.peak_kb.get(pid, 0) - idle[pid]) / 1024 for pid in workers}
    busiest = max(rise, key=rise.get)
    return {
        "http": int(code),
        "bytes": int(size),
        "seconds": round(float(seconds), 3),
        "mb_per_s": round(int(size) / float(seconds) / 1e6, 1),
        "sha256_ok": got == expected_sha,
        "worker_idle_mb": round(idle[busiest] / 1024, 1),
        "worker_peak_mb": round(sampler.peak_kb[busiest] / 1024, 1),
        "rss_rise_mb": round(rise[busiest], 1),
        "samples": sampler.samples,
    }


def summarize(runs: list[dict]) -> dict:
    return {
        "runs": runs,
        "median_mb_per_s": h.median([r["mb_per_s"] for r in runs]),
        "median_rss_rise_mb": h.median([r["rss_rise_mb"] for r in runs]),
        "max_rss_rise_mb": max(r["rss_rise_mb"] for r in runs),
        "all_sha256_ok": all(r["sha256_ok"] and r["http"] == 200 and r["bytes"] == SIZE for r in runs),
    }


def run_backend(name: str, py_spy: str | None) -> dict:
    with h.backend(name) as b:
        source = b.tmp / "model.bin"
        sha = make_file(source, SIZE)
        job_id, stored_sha = insert_job_with_model(b, source)
        assert stored_sha == sha
        out: dict = {}
        api, url = h.start_api(b)
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                for _ in range(20):  # both workers have served the job's JSON (imports, DB connections)
                    http.get(f"/v1/jobs/{job_id}").raise_for_status()
            model_url = f"{url}/v1/jobs/{job_id}/model?format=h5"
            out["api_stream"] = summarize([download(api, model_url, b.tmp / "got.bin", sha) for _ in range(RUNS)])
            if py_spy:
                loop = f"for i in $(seq 30); do curl -s -o /dev/null '{model_url}'; done"
                out["profile_api"] = h.profile(
                    api.pid, 8, h.PROFILES / f"download-{name}.txt", py_spy, load=["timeout", "12", "sh", "-c", loop]
                )
        finally:
            api.stop()
        bare, bare_url = start_gunicorn(
            {**b.env, "BENCH_FILE": str(source)}, b.tmp / "bare.log", h.GUNICORN_FLAGS, app="bench.bare_app:create_app()"
        )
        try:
            out["send_file"] = summarize([download(bare, f"{bare_url}/file", b.tmp / "got.bin", sha) for _ in range(RUNS)])
        finally:
            bare.stop()
    api_speed, disk_speed = out["api_stream"]["median_mb_per_s"], out["send_file"]["median_mb_per_s"]
    out["speed_ratio"] = round(api_speed / disk_speed, 3)
    out["target_speed"] = "met" if api_speed / disk_speed >= TARGET_SPEED else "not met"
    out["target_rss"] = "met" if out["api_stream"]["max_rss_rise_mb"] < TARGET_RSS_MB else "not met"
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile more API downloads per backend")
    args = parser.parse_args()
    names = args.backends.split(",")
    results = {
        **h.machine(),
        "gunicorn": " ".join(h.GUNICORN_FLAGS),
        "bytes": SIZE,
        "runs": RUNS,
        "client": "curl to a local file",
        "chunk_bytes": 4 * 1024 * 1024,
        "targets": "API MB/s >= 70 % of send_file; API worker RSS rise < 50 MB",
    }
    for name in names:
        results[name] = run_backend(name, args.py_spy)
    out = h.write("download", results)
    rows = []
    for name in names:
        r = results[name]
        for key, label in (("api_stream", "GET /v1/jobs/{id}/model"), ("send_file", "Flask send_file, disk")):
            s = r[key]
            rows.append(
                [
                    f"{name} {label}",
                    s["median_mb_per_s"],
                    " ".join(str(x["mb_per_s"]) for x in s["runs"]),
                    s["median_rss_rise_mb"],
                    s["max_rss_rise_mb"],
                    "yes" if s["all_sha256_ok"] else "NO",
                ]
            )
        rows.append(
            [
                f"{name}: speed {r['speed_ratio']:.2f} of send_file (>= 0.7 {r['target_speed']}); "
                f"RSS rise < 50 MB {r['target_rss']}",
                "",
                "",
                "",
                "",
                "",
            ]
        )
    h.table(
        f"100 MB download, median of {RUNS} (gunicorn {results['gunicorn']}, load avg at start "
        f"{results['load_avg_at_start']})",
        ["", "MB/s", "runs", "RSS rise MB (median)", "max", "sha256 ok"],
        rows,
    )
    for name in names:
        if results[name].get("profile_api"):
            h.print_profile(f"{name} API download", results[name]["profile_api"])
    print(f"\nwritten to {out.relative_to(h.ROOT)}")


if __name__ == "__main__":
    main()
