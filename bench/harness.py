"""What bench/polling.py, download.py, scale.py and memory.py share: a throwaway backend, the service's processes
on it (started by ``stack.processes``, as the tests start theirs), wrk, and /proc sampling. Nothing here
measures by itself.

A backend is either the embedded default (a temp ``TRAINER_VAR_DIR``: SQLite + SQLAlchemy broker) or
PostgreSQL on 127.0.0.1:5432 (a fresh database, dropped afterwards) + Redis 127.0.0.1:6379 db 11, or
``BENCH_REDIS_URL`` (flushed before and after; no other db is touched).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.load import parse as parse_wrk
from core.settings import ROOT
from stack import processes
from stack.databases import flush_redis, scratch_database
from stack.processes import API_APP, Proc, clean_env

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
#: BENCH_REDIS_URL moves a benchmark to another Redis database, so two can run side by side (it is flushed).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
GUNICORN_FLAGS = ["--workers", "2", "--threads", "4"]
RESULTS = ROOT / "bench" / "results"
PROFILES = Path(tempfile.gettempdir()) / "bench-profiles"  # raw py-spy output (MBs): kept out of the repository


def _unwind(signum, frame):
    raise SystemExit(128 + signum)


# a benchmark stopped by SIGTERM (``timeout``, ``kill``) unwinds its ``with`` blocks and ``finally`` clauses like
# Ctrl-C does, so the workers, APIs and scratch databases it started go with it instead of outliving it
signal.signal(signal.SIGTERM, _unwind)


def machine() -> dict:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "code": head.strip() + (" + uncommitted changes" if dirty else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_avg_at_start": [round(v, 2) for v in os.getloadavg()],
    }


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
        return load_settings(
            database_url=f"sqlite:///{var / 'trainer.sqlite'}", broker_url=f"sqla+sqlite:///{var / 'broker.sqlite'}"
        )


@contextmanager
def backend(name: str, **extra_env):
    """A migrated, empty backend; its database (and Redis db 11) is gone afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    env = clean_env(**{"TRAINER_SINGLE_USER": "1", "TRAINER_LOG_LEVEL": "WARNING", **extra_env})
    try:
        if name == "postgres":
            flush_redis(REDIS_URL)
            with scratch_database(PG_ADMIN, "trainer_bench") as url:
                env.update(DATABASE_URL=url, CELERY_BROKER_URL=REDIS_URL)
                processes.migrate(env)
                yield Backend(name, env, tmp, url.rsplit("/", 1)[1])
        else:
            env["TRAINER_VAR_DIR"] = str(tmp)
            processes.migrate(env)
            yield Backend(name, env, tmp)
    finally:
        if name == "postgres":
            flush_redis(REDIS_URL)
        shutil.rmtree(tmp, ignore_errors=True)


def start_api(b: Backend, name: str = "api") -> tuple[Proc, str]:
    return processes.start_gunicorn(b.env, b.tmp / f"{name}.log", GUNICORN_FLAGS, app=API_APP)


def start_worker(b: Backend, hostname: str, **extra_env) -> Proc:
    return processes.start_worker(
        {**b.env, "TRAINER_LOG_LEVEL": "INFO", **{k: str(v) for k, v in extra_env.items()}},
        b.tmp / f"worker-{hostname}.log",
        hostname,
    )


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
        subprocess.run(
            [
                py_spy,
                "record",
                "--subprocesses",
                "--nonblocking",
                "--format",
                "raw",
                "-r",
                "200",
                "-d",
                str(seconds),
                "-p",
                str(pid),
                "-o",
                str(out),
            ],
            capture_output=True,
            check=True,
        )
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
