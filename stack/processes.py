"""Starting and stopping the service's own processes — the API under gunicorn or werkzeug, a Celery worker —
each in a process group of its own, so that stopping one ends exactly what was started and nothing else."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from core.settings import ROOT, Settings

BIN = Path(sys.executable).parent
SERVICE_VARIABLES = ("TRAINER_", "DATABASE_URL", "CELERY_")
API_APP = "service.app:create_app()"
#: The API's gunicorn configuration as deployed (worker class, threads, the metrics and logging hooks).
API_CONFIG = ["--config", "python:service.gunicorn_conf"]


def free_port() -> int:
    """A loopback port nothing listens on now (the OS's choice; another process could still take it first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict[str, str]:
    """This process's environment without the service's own variables, plus ``extra``: a developer's
    DATABASE_URL or TRAINER_TOKEN must never point a test's or a benchmark's process at their own service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_VARIABLES)}
    env["PYTHONUNBUFFERED"] = "1"  # logs are read while the process runs
    env.update({k: str(v) for k, v in extra.items()})
    return env


def settings_env(settings: Settings, **extra) -> dict[str, str]:
    """The environment that gives a child process the same ``settings`` a fixture built in this process."""
    return clean_env(
        **{
            "DATABASE_URL": settings.database_url,
            "CELERY_BROKER_URL": settings.broker_url,
            "TRAINER_HEARTBEAT_INTERVAL_S": settings.heartbeat_interval_s,
            "TRAINER_HEARTBEAT_TIMEOUT_S": settings.heartbeat_timeout_s,
            "TRAINER_RECONCILE_INTERVAL_S": settings.reconcile_interval_s,
            "TRAINER_REDISPATCH_AFTER_S": settings.redispatch_after_s,
            "TRAINER_MAX_ATTEMPTS": settings.max_attempts,
            "TRAINER_CHECKPOINT_INTERVAL_S": settings.checkpoint_interval_s,
            "TRAINER_INFERENCE": settings.inference,
            **extra,
        }
    )


def migrate(env: dict[str, str]) -> None:
    """Bring the database ``env`` names to the newest schema, in a child process as deployment does."""
    subprocess.run([sys.executable, "-m", "core.migrate"], cwd=ROOT, env=env, check=True, capture_output=True)


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


class Proc:
    """A process group this code started, its output in ``log_path``; signals go to the whole group
    (gunicorn's and Celery's forked children included), never to anything by name."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        with log_path.open("w") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list[int]:
        return children_of(self.pid)

    def pause(self) -> None:
        """SIGSTOP the group: a running job holds where it is until ``resume``."""
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """``sig`` to the group, SIGKILL if it has not exited after ``timeout`` seconds."""
        if self.running():
            os.killpg(self.pid, sig)
            os.killpg(self.pid, signal.SIGCONT)  # a paused group takes its signal only once it runs again
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)


def _wait_until_up(proc: Proc, what: str, is_up, timeout: float, interval: float) -> None:
    """Return once ``is_up()``; a process that exits or takes too long is stopped and its log's tail raised."""
    deadline = time.monotonic() + timeout
    while not is_up():
        if not proc.running() or time.monotonic() > deadline:
            proc.stop(signal.SIGKILL)
            raise RuntimeError(f"{what} did not start:\n{proc.log()[-3000:]}")
        time.sleep(interval)


def start_worker(
    env: dict[str, str], log_path: Path, hostname: str | None = None, loglevel: str = "INFO", timeout: float = 120
) -> Proc:
    """A real ``celery worker`` (prefork, one child at a time), returned once it logs that it is ready."""
    hostname = hostname or f"test-{uuid.uuid4().hex[:6]}"
    proc = Proc(
        [
            str(BIN / "celery"),
            "-A",
            "worker.celery_app",
            "worker",
            "--loglevel",
            loglevel,
            "--concurrency",
            "1",
            "--hostname",
            f"{hostname}@%h",
            "--without-mingle",
            "--without-gossip",
        ],
        env,
        log_path,
    )
    _wait_until_up(proc, f"worker {hostname}", lambda: " ready." in proc.log(), timeout, 0.1)
    return proc


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_gunicorn(
    env: dict[str, str], log_path: Path, flags: list[str], app: str = API_APP, timeout: float = 60, poll: float = 0.05
) -> tuple[Proc, str]:
    """``app`` under gunicorn on a free loopback port, returned with its URL once /healthz answers and every
    worker process named by ``--workers`` (the API's config says 2; else 1) has been forked, so nothing measured
    waits on imports. The API gets its deployed configuration (``API_CONFIG``); ``flags`` override it."""
    port = free_port()
    config = API_CONFIG if app == API_APP else []
    proc = Proc([str(BIN / "gunicorn"), *config, "--bind", f"127.0.0.1:{port}", *flags, app], env, log_path)
    url = f"http://127.0.0.1:{port}"
    workers = int(flags[flags.index("--workers") + 1]) if "--workers" in flags else 2 if config else 1
    _wait_until_up(proc, app, lambda: _healthy(url) and len(proc.children()) >= workers, timeout, poll)
    return proc, url


class LiveServer:
    """A Flask app served over real HTTP by werkzeug in a thread of this process, on a loopback port."""

    def __init__(self, app):
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
