"""Outside client for deploy/podman/test-compose.sh: talks to the api over HTTP on loopback.

    python compose_smoke.py --base http://127.0.0.1:18000 wait-ready [--timeout S]
    python compose_smoke.py --base URL smoke [--out DIR]        # small job -> succeeded -> h5 checks
    python compose_smoke.py --base URL submit-long --epochs N   # prints the job id
    python compose_smoke.py --base URL wait-status ID running [--timeout S]
    python compose_smoke.py --base URL wait-terminal ID [--timeout S]
    python compose_smoke.py --base URL check-auth               # no token / a wrong one -> 401
    python compose_smoke.py --base URL check-resumed ID         # succeeded, each epoch trained once across attempts
    python compose_smoke.py --base URL submit-batch --jobs N    # prints N job ids, one a line
    python compose_smoke.py --base URL wait-batch FILE          # all succeeded exactly once; JSON with the wall time

The token is $TRAINER_TOKEN: the one README's quick start made with ``python -m core.tokens create``.

Standard library + h5py/numpy (for the sparsity check) only. Exit status 0 = check passed.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SMALL_RECIPE = {
    "name": "compose-smoke",
    "dataset": {"name": "iris", "test_fraction": 0.2, "validation_fraction": 0.1},
    "seed": 1,
    "model": {
        "input_shape": [4],
        "layers": [
            {"type": "dense", "units": 16, "activation": "relu"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    },
    "training": {
        "optimizer": {"type": "adam", "learning_rate": 0.01},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "epochs": 5,
        "batch_size": 16,
    },
    "pruning": {
        "schedule": {
            "type": "polynomial_decay",
            "initial_sparsity": 0.0,
            "final_sparsity": 0.5,
            "begin_step": 0,
            "end_step": "auto",
            "frequency": 1,
        }
    },
    "export": {"formats": ["h5"]},
}
TERMINAL = {"succeeded", "failed", "cancelled"}
TOKEN = os.environ.get("TRAINER_TOKEN", "")
#: What .env.example used to ship as a working token; it must be refused now.
OLD_SHIPPED_TOKEN = "change-me"


def log(msg: str) -> None:
    print(f"[client] {msg}", file=sys.stderr, flush=True)


def request(base: str, method: str, path: str, body: dict | None = None, timeout: float = 30,
            token: str | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    token = TOKEN if token is None else token
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_job(base: str, job_id: str) -> dict:
    status, _, body = request(base, "GET", f"/v1/jobs/{job_id}")
    if status != 200:
        raise SystemExit(f"GET /v1/jobs/{job_id} -> {status}: {body[:500]!r}")
    return json.loads(body)


def submit(base: str, recipe: dict) -> dict:
    status, headers, body = request(base, "POST", "/v1/jobs", recipe)
    if status != 202:
        raise SystemExit(f"POST /v1/jobs -> {status} (expected 202): {body[:1000]!r}")
    job = json.loads(body)
    log(f"submitted {job['id']} ({recipe['name']}), status {job['status']}")
    return job


def wait_for(base: str, job_id: str, want: set[str], timeout: float, seen: list | None = None) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while True:
        job = get_job(base, job_id)
        state = f"{job['status']}#{job.get('attempt')}"
        if state != last:
            log(f"{job_id}: {job['status']} (attempt {job.get('attempt')})")
            last = state
            if seen is not None:
                seen.append((round(time.monotonic(), 1), state))
        if job["status"] in want:
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} still {job['status']} after {timeout:.0f}s (wanted {sorted(want)})")
        time.sleep(0.5)


def kernel_sparsity(path: Path) -> tuple[float, dict]:
    import h5py
    import numpy as np

    per, zeros, total = {}, 0, 0

    def visit(name, obj):
        nonlocal zeros, total
        if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] == "kernel:0":
            a = np.asarray(obj)
            z = int(np.count_nonzero(a == 0))
            per[name] = round(z / a.size, 4)
            zeros += z
            total += a.size

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    if not total:
        raise SystemExit(f"{path}: no dataset named kernel:0")
    return zeros / total, per


def cmd_wait_ready(a) -> None:
    deadline = time.monotonic() + a.timeout
    while True:
        try:
            status, _, body = request(a.base, "GET", "/readyz", timeout=5)
            if status == 200:
                log(f"/readyz: {body.decode().strip()}")
                return
            detail = body[:200]
        except OSError as exc:
            detail = repr(exc)
        if time.monotonic() > deadline:
            raise SystemExit(f"api not ready after {a.timeout}s: {detail!r}")
        time.sleep(1)


def cmd_check_auth(a) -> None:
    for label, token in (("no token", ""), ("the formerly shipped token", OLD_SHIPPED_TOKEN)):
        status, _, body = request(a.base, "GET", "/v1/jobs", token=token)
        if status != 401:
            raise SystemExit(f"GET /v1/jobs with {label} -> {status}, expected 401: {body[:300]!r}")
    status, _, body = request(a.base, "GET", "/v1/jobs")
    if status != 200:
        raise SystemExit(f"GET /v1/jobs with $TRAINER_TOKEN -> {status}: {body[:300]!r}")
    log("no token and 'change-me' -> 401; the quick start's token -> 200")


def cmd_smoke(a) -> None:
    t0 = time.monotonic()
    job = submit(a.base, SMALL_RECIPE)
    job = wait_for(a.base, job["id"], TERMINAL, a.timeout)
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job['id']} ended {job['status']}: {json.dumps(job.get('error'))}")
    t_done = time.monotonic() - t0
    status, headers, body = request(a.base, "GET", f"/v1/jobs/{job['id']}/model?format=h5", timeout=60)
    if status != 200:
        raise SystemExit(f"GET model -> {status}: {body[:500]!r}")
    h = {k.lower(): v for k, v in headers.items()}
    digest = hashlib.sha256(body).hexdigest()
    etag = h.get("etag", "").strip('"')
    xsum = h.get("x-checksum-sha256", "")
    if digest != etag or digest != xsum:
        raise SystemExit(f"sha256 mismatch: body {digest}, ETag {etag!r}, X-Checksum-Sha256 {xsum!r}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{job['id']}.h5"
    path.write_bytes(body)
    measured, per = kernel_sparsity(path)
    reported = job["result"]["sparsity"]["overall"]
    if abs(measured - reported) > a.tolerance:
        raise SystemExit(f"kernel sparsity in the h5 {measured:.4f} != result.sparsity.overall {reported:.4f}")
    print(json.dumps({
        "job": job["id"], "seconds_to_succeeded": round(t_done, 1), "model_bytes": len(body),
        "sha256": digest, "sparsity_h5": round(measured, 4), "sparsity_reported": reported,
        "per_kernel": per,
    }))
    log(f"smoke ok: {job['id']} succeeded in {t_done:.1f}s, {len(body)} bytes, sha256 ok, "
        f"sparsity h5 {measured:.4f} vs reported {reported:.4f}")


def cmd_submit_long(a) -> None:
    recipe = copy.deepcopy(SMALL_RECIPE)
    recipe["name"] = "compose-restart"
    recipe["training"]["epochs"] = a.epochs
    recipe["training"]["batch_size"] = a.batch_size
    print(submit(a.base, recipe)["id"])


def cmd_wait_status(a) -> None:
    job = wait_for(a.base, a.job_id, set(a.status.split(",")) | TERMINAL, a.timeout)
    print(job["status"])


def trained_once(base: str, job: dict) -> list[str]:
    """What is wrong with a succeeded job's epochs: each epoch 1..N once, the attempts in order, and every later
    attempt resumed from the checkpoint of the last epoch before it (so none was trained twice)."""
    history = job["history"]
    epochs = [h["epoch"] for h in history]
    n = job["recipe"]["training"]["epochs"]
    wrong = []
    if epochs != list(range(1, n + 1)):
        wrong.append(f"epochs {epochs[:5]}... are not 1..{n}")
    attempts = [h["attempt"] for h in history]
    if attempts != sorted(attempts):
        wrong.append(f"attempts out of order: {attempts}")
    status, _, body = request(base, "GET", f"/v1/jobs/{job['id']}/logs")
    text = body.decode(errors="replace")
    for attempt in sorted(set(attempts) - {attempts[0]} if attempts else set()):
        before = max(h["epoch"] for h in history if h["attempt"] < attempt)  # a later attempt has earlier epochs
        if f"resuming from the checkpoint after epoch {before}" not in text:
            wrong.append(f"attempt {attempt} did not resume after epoch {before} (the last one trained before it)")
    return wrong


def cmd_check_resumed(a) -> None:
    job = get_job(a.base, a.job_id)
    if job["status"] != "succeeded":
        raise SystemExit(f"job {a.job_id} is {job['status']}: {json.dumps(job.get('error'))}")
    wrong = trained_once(a.base, job)
    if wrong:
        raise SystemExit(f"job {a.job_id}: " + "; ".join(wrong))
    if job["attempt"] < 2:
        raise SystemExit(f"job {a.job_id} finished on attempt 1: the restart did not interrupt it (raise LONG_EPOCHS)")
    status, _, logs = request(a.base, "GET", f"/v1/jobs/{a.job_id}/logs")
    if status != 200 or b"handed back" not in logs:  # the hand-back, not the heartbeat timeout, requeued it
        raise SystemExit(f"job {a.job_id}: its log does not show a hand-back ({status})")
    first = [h["epoch"] for h in job["history"] if h["attempt"] < job["attempt"]]
    print(json.dumps({"job": job["id"], "attempt": job["attempt"], "handed_back_after_epoch": max(first, default=0),
                      "epochs": len(job["history"])}))


def cmd_submit_batch(a) -> None:
    recipe = copy.deepcopy(SMALL_RECIPE)
    recipe["name"] = "compose-batch"
    recipe["training"]["epochs"] = a.epochs
    recipe["training"]["batch_size"] = a.batch_size
    for _ in range(a.jobs):
        print(submit(a.base, recipe)["id"], flush=True)


def cmd_wait_batch(a) -> None:
    from datetime import datetime

    ids = Path(a.file).read_text().split()
    deadline = time.monotonic() + a.timeout
    jobs = {}
    for job_id in ids:
        jobs[job_id] = wait_for(a.base, job_id, TERMINAL, max(1.0, deadline - time.monotonic()))
    bad = {i: j["status"] for i, j in jobs.items() if j["status"] != "succeeded"}
    if bad:
        raise SystemExit(f"{len(bad)} of {len(ids)} jobs did not succeed: {bad}")
    wrong = {i: w for i, j in jobs.items() if (w := trained_once(a.base, j))}
    if wrong:
        raise SystemExit(f"{len(wrong)} jobs trained an epoch twice or out of order: {wrong}")
    created = min(datetime.fromisoformat(j["created_at"]) for j in jobs.values())
    finished = max(datetime.fromisoformat(j["finished_at"]) for j in jobs.values())
    print(json.dumps({"jobs": len(ids), "succeeded_exactly_once": len(ids),
                      "wall_s": round((finished - created).total_seconds(), 1),
                      "resumed": sum(1 for j in jobs.values() if j["attempt"] > 1)}))


def cmd_wait_terminal(a) -> None:
    seen: list = []
    job = wait_for(a.base, a.job_id, TERMINAL, a.timeout, seen)
    print(json.dumps({"job": job["id"], "status": job["status"], "error": job.get("error"),
                      "attempt": job.get("attempt"), "transitions": [s for _, s in seen]}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", default="http://127.0.0.1:18000")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("wait-ready")
    s.add_argument("--timeout", type=float, default=300)
    s = sub.add_parser("smoke")
    s.add_argument("--timeout", type=float, default=600)
    s.add_argument("--out", default="var/podman-test")
    s.add_argument("--tolerance", type=float, default=0.02)
    s = sub.add_parser("submit-long")
    s.add_argument("--epochs", type=int, default=400)
    s.add_argument("--batch-size", type=int, default=4)
    s = sub.add_parser("wait-status")
    s.add_argument("job_id")
    s.add_argument("status")
    s.add_argument("--timeout", type=float, default=300)
    sub.add_parser("check-auth")
    s = sub.add_parser("wait-terminal")
    s.add_argument("job_id")
    s.add_argument("--timeout", type=float, default=600)
    s = sub.add_parser("check-resumed")
    s.add_argument("job_id")
    s = sub.add_parser("submit-batch")
    s.add_argument("--jobs", type=int, default=20)
    s.add_argument("--epochs", type=int, default=40)
    s.add_argument("--batch-size", type=int, default=4)
    s = sub.add_parser("wait-batch")
    s.add_argument("file")
    s.add_argument("--timeout", type=float, default=900)
    a = p.parse_args()
    {"wait-ready": cmd_wait_ready, "smoke": cmd_smoke, "submit-long": cmd_submit_long,
     "wait-status": cmd_wait_status, "wait-terminal": cmd_wait_terminal, "check-auth": cmd_check_auth,
     "check-resumed": cmd_check_resumed, "submit-batch": cmd_submit_batch, "wait-batch": cmd_wait_batch}[a.cmd](a)


if __name__ == "__main__":
    main()
