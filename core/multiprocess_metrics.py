"""The directory where prometheus-client's multiprocess mode keeps one process tree's metrics.

prometheus-client picks its value class when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``; so the
process that starts a tree (gunicorn's master, the Celery worker's parent) calls ``prepare`` before anything
imports it, and the processes it forks inherit the variable. Files left by an earlier run would be added to
this run's counters, so the directory starts empty.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from core.settings import Settings

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare(settings: Settings, prefix: str) -> tuple[Path, bool]:
    """``settings.metrics_dir`` emptied, or a fresh temporary directory when none is set; exported to this process
    and its children. Returns the directory and whether it was made here (its maker removes it at exit)."""
    if settings.metrics_dir:
        path, made = Path(settings.metrics_dir), False
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path, made = Path(tempfile.mkdtemp(prefix=f"trainer-{prefix}-metrics-")), True
    os.environ[VARIABLE] = str(path)
    _values_to_files()
    return path, made


def _values_to_files() -> None:
    """prometheus-client chose in-memory values if something imported it before ``prepare`` — Flower does, from
    the ``celery`` command's plugin, before the worker's app module runs — and then every child's counts vanish
    from the parent's scrape. Metrics read ``values.ValueClass`` as they are created, so choosing it again here
    puts every metric made from now on (the service's own) in the multiprocess files."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
