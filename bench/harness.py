"""What bench/polling.py, download.py, scale.py and memory.py share: real processes, a throwaway backend,
wrk, and /proc sampling. Nothing here measures by itself.

A backend is either the embedded default (a temp ``TRAINER_VAR_DIR``: SQLite + SQLAlchemy broker) or
PostgreSQL on 127.0.0.1:5432 (a fresh database, dropped afterwards) + Redis 127.0.0.1:6379 db 11 (flushed
before and after; no other db is touched).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.load import parse as parse_wrk
from bench.overhead import BIN, ROOT, free_port

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/11"
GUNICORN_FLAGS = ["--workers", "2", "--threads", "4"]
RESULTS = ROOT / "bench" / "results"
PROFILES = Path(tempfile.gettempdir()) / "bench-profiles"  # raw py-spy output (MBs): kept out of the repository


def machine() -> dict:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return {"machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
            "code": head.strip() + (" + uncommitted changes" if dirty else ""),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "load_avg_at_start": [round(v, 2) for v in os.getloadavg()]}


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "DATABASE_URL", "CELERY_"))}
    env.update(TRAINER_SINGLE_USER="1", PYTHONUNBUFFERED="1", TRAINER_LOG_LEVEL="WARNING")
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class Backend:
    name: str  # "sqlite" or "postgres"
    env: dict
    tmp: Path
    pg_db: str | None = None

    def settings(self):
        from core.settings import load_settings

        if self.pg_db:
            return load_settings(database_url=self.env["DATABASE_URL"], broker_url=self.env["CELERY_BROKER_URL"])
        var = Path(self.env["TRAINER_VAR_DIR"])
        return load_settings(database_url=f"sqlite:///{var / 'trainer.sqlite'}",
                             broker_url=f"sqla+sqlite:///{var / 'broker.sqlite'}")


def _flush_redis_db11() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


@contextmanager
def backend(name: str, **extra_env):
    """A migrated, empty backend; its database (and Redis db 11) is gone afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    env = base_env(**extra_env)
    pg_db = None
    if name == "postgres":
        import psycopg

        pg_db = f"trainer_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_db}"')
        env["DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_db}"
        env["CELERY_BROKER_URL"] = REDIS_URL
        _flush_redis_db11()
    else:
        env["TRAINER_VAR_DIR"] = str(tmp)
    try:
        subprocess.run([sys.executable, "-m", "core.migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
        yield Backend(name, env, tmp, pg_db)
    finally:
        if pg_db:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
            _flush_redis_db11()
        shutil.rmtree(tmp, ignore_errors=True)


class Proc:
    """A process group we started; ``stop()`` ends exactly it."""

    def __init__(self, cmd: list[str], env: dict, log: Path):
        self.log_path = log
        self.popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.pid = self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        return children_of(self.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(10)


def start_gunicorn(app: str, env: dict, log: Path, flags: list[str] = GUNICORN_FLAGS) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc([str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", *flags, app], env, log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{app} did not start:\n{proc.log()[-3000:]}")
        time.sleep(0.05)
    # every worker answered once (imports done) before anything is measured
    deadline = time.monotonic() + 30
    while len(proc.children()) < int(flags[flags.index("--workers") + 1]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, url


def start_api(b: Backend, name: str = "api") -> tuple[Proc, str]:
    return start_gunicorn("service.app:create_app()", b.env, b.tmp / f"{name}.log")


def start_worker(b: Backend, hostname: str, **extra_env) -> Proc:
    env = {**b.env, "TRAINER_LOG_LEVEL": "INFO", **{k: str(v) for k, v in extra_env.items()}}
    proc = Proc([str(BIN / "celery"), "-A", "worker.celery_app", "worker", "--loglevel", "INFO", "--concurrency", "1",
                 "--hostname", f"{hostname}@%h", "--without-mingle", "--without-gossip"], env,
                b.tmp / f"worker-{hostname}.log")
    deadline = time.monotonic() + 120
    while " ready." not in proc.log():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"worker {hostname} did not start:\n{proc.log()[-3000:]}")
        time.sleep(0.1)
    return proc


def wait_job(http: httpx.Client, job_id: str, statuses=frozenset({"succeeded", "failed", "cancelled"}),
             timeout: float = 300, interval: float = 0.1) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {job['status']} after {timeout} s")
        time.sleep(interval)


def wrk(url: str, seconds: int, threads: int = 2, connections: int = 32, script: Path | None = None) -> dict:
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    result = parse_wrk(out)
    result["p75_ms"] = _latency(out, "75")
    return result


def _latency(output: str, label: str) -> float:
    import re

    m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def status_kb(pid: int, fields=("VmRSS",)) -> dict[str, int] | None:
    """Fields of /proc/<pid>/status in kB; None when the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in fields:
                    out[name] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return out


def uss_kb(pid: int) -> int | None:
    """Private_Clean + Private_Dirty from /proc/<pid>/smaps_rollup: the pages only this process has (a forked
    child's VmRSS also counts what it still shares with its parent)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return total


def status_rss_kb(pid: int) -> int | None:
    got = status_kb(pid)
    return got["VmRSS"] if got else None


@dataclass
class RssSampler:
    """Polls /proc/<pid>/status of ``pids()`` every ``interval`` s in a thread: peak VmRSS per pid (and with
    ``uss=True`` the peak of its private pages, ``uss_kb``), every pid seen."""

    pids: callable
    interval: float = 0.02
    uss: bool = False
    peak_kb: dict = field(default_factory=dict)
    peak_uss_kb: dict = field(default_factory=dict)
    first_kb: dict = field(default_factory=dict)
    samples: int = 0

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in self.pids():
                kb = status_rss_kb(pid)
                if kb is not None:
                    self.first_kb.setdefault(pid, kb)
                    self.peak_kb[pid] = max(kb, self.peak_kb.get(pid, 0))
                    if self.uss and (private := uss_kb(pid)) is not None:
                        self.peak_uss_kb[pid] = max(private, self.peak_uss_kb.get(pid, 0))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak_mb(self) -> dict[int, float]:
        return {pid: round(kb / 1024, 1) for pid, kb in self.peak_kb.items()}


def children_of(pid: int) -> list[int]:
    """Direct children, from /proc (cheap enough to call every 20 ms)."""
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(p) for p in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return kids


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def median(values):
    return statistics.median(values)


def write(name: str, results: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    return out


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


GENERIC_FRAMES = ("gunicorn/", "threading.py", "concurrent/futures", "selectors.py", "<module>")


def profile(pid: int, seconds: int, out: Path, py_spy: str, load: list[str] | None = None) -> dict:
    """py-spy (sampling, outside the process) on a gunicorn master and its workers while ``load`` (a command,
    e.g. wrk) runs: the functions with the largest inclusive and self share of the samples."""
    out.parent.mkdir(parents=True, exist_ok=True)
    loader = subprocess.Popen(load, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if load else None
    try:
        time.sleep(0.5)
        subprocess.run([py_spy, "record", "--subprocesses", "--nonblocking", "--format", "raw", "-r", "200", "-d",
                        str(seconds), "-p", str(pid), "-o", str(out)], capture_output=True, check=True)
    finally:
        if loader:
            loader.wait()
    return summarize_profile(out)


def summarize_profile(out: Path) -> dict:
    inclusive: dict[str, int] = {}
    self_: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        shown = [f for f in frames if not any(g in f for g in GENERIC_FRAMES)]
        total += n
        for f in set(shown):
            inclusive[f] = inclusive.get(f, 0) + n
        if frames:
            self_[frames[-1]] = self_.get(frames[-1], 0) + n

    def top(d, k):
        return [[round(100 * v / total, 1), f] for f, v in sorted(d.items(), key=lambda kv: -kv[1])[:k]]

    return {"samples": total, "file": str(out), "inclusive_pct": top(inclusive, 25), "self_pct": top(self_, 12)}


def print_profile(title: str, prof: dict) -> None:
    print(f"\n{title}: py-spy, {prof['samples']} samples ({prof['file']})")
    print("  inclusive %:")
    for share, frame in prof["inclusive_pct"]:
        print(f"    {share:5.1f}  {frame}")
    print("  self %:")
    for share, frame in prof["self_pct"]:
        print(f"    {share:5.1f}  {frame}")
