"""gunicorn's configuration for the API: ``gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'``.

The worker class and threads are chosen for ``?wait=`` polling: a held request occupies one thread (it holds no
database connection), so each worker has threads for 200 held requests plus the ordinary ones — connections are
not spread evenly between the workers, and with 128 threads each one worker took more held requests than it had
threads, so its plain requests waited up to 30 s (README "Operating it"; bench/polling.py measures it). Threads
are started as needed, up to ``threads``. Flags on the command line override these values.

The hooks give prometheus-client's multiprocess mode its directory, empty, before any worker is forked
(``core.multiprocess_metrics``), tell it when a worker exits, and put gunicorn's own lines in JSON when
``TRAINER_LOG_FORMAT=json``.
"""

from __future__ import annotations

from core import multiprocess_metrics
from core.settings import load_settings

_settings = load_settings()
_made: dict = {}

workers = 2
worker_class = "gthread"
threads = 256
graceful_timeout = 10

if _settings.log_format == "json":
    _handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["context"],
        "stream": "ext://sys.stderr",
    }
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "core.log_context.formatter", "log_format": "json"}},
        "filters": {"context": {"()": "core.log_context.ContextFilter"}},
        "handlers": {"json": _handler},
        "root": {"level": "INFO", "handlers": []},  # the app's own handler (core.log_context) goes there
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["json"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["json"], "propagate": False},
        },
    }


def on_starting(server):
    path, made = multiprocess_metrics.prepare(_settings, "api")
    if made:
        _made["path"] = path
    server.log.info("prometheus multiprocess directory: %s", path)


def child_exit(server, worker):
    from prometheus_client import multiprocess  # after on_starting set its directory

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if "path" in _made:
        multiprocess_metrics.remove(_made["path"])
