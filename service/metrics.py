"""GET /metrics: the API's Prometheus metrics, in the text format, with the official ``prometheus-client``.

Two sources. Requests are counted and timed in each process as they happen; under gunicorn every worker writes
them to prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set up by
``service/gunicorn_conf.py``) and a scrape adds them up. The jobs' figures are read from the database at scrape
time by ``JobsCollector``: the database is the source of truth and holds every owner's jobs whichever process
changed them, so these gauges need no process to keep them in step.

Not public when tokens are on: a scrape sends ``Authorization: Bearer $TRAINER_METRICS_TOKEN``, a token that
reads /metrics and nothing else (an owner's API token is refused here, and this token is refused by /v1).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable, Iterator

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from core import jobs, storage
from core.db import Database
from core.errors import Unauthorized
from service.extensions import services

log = logging.getLogger(__name__)
#: prometheus-client's defaults, plus 30 s: a ``?wait=30`` request is held that long by design.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, float("inf"))
#: The route of a held request (``?wait=`` with If-None-Match): kept apart so its seconds do not hide the
#: plain GET's latency.
WAIT_SUFFIX = " (wait)"

REQUESTS = Counter(
    "trainer_http_requests", "API requests by route (the URL rule, not the raw path), method and status.",
    ["route", "method", "status"],
)  # fmt: skip
LATENCY = Histogram(
    "trainer_http_request_duration_seconds", "API request latency by route and method.", ["route", "method"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip

bp = Blueprint("metrics", __name__)


def route_label() -> str:
    rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    if "wait" in request.args and request.if_none_match:
        return rule + WAIT_SUFFIX
    return rule


def install(app: Flask) -> None:
    @app.before_request
    def _start_clock():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            route = route_label()
            REQUESTS.labels(route, request.method, str(response.status_code)).inc()
            LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        return response

    app.register_blueprint(bp)


class JobsCollector(Collector):
    """Every owner's jobs by status, failed jobs by ``error.type`` and stored bytes by kind, read at scrape time
    (three grouped queries). A database that cannot be read gives ``trainer_database_readable 0``, not a 500."""

    def __init__(self, db: Database):
        self.db = db

    def collect(self) -> Iterator[Metric]:
        readable = GaugeMetricFamily("trainer_database_readable", "1 if this scrape could read the job figures.")
        try:
            with self.db.session() as session:
                by_status, failures = jobs.counts(session), jobs.failures_by_type(session)
                stored = storage.bytes_by_kind(session)
        except SQLAlchemyError as exc:
            log.warning("metrics: could not read the database: %s", str(exc).splitlines()[0])
            readable.add_metric([], 0)
            yield readable
            return
        readable.add_metric([], 1)
        yield readable
        status = GaugeMetricFamily("trainer_jobs", "Jobs stored now, by status (every owner).", labels=["status"])
        for name in ("queued", "running", "succeeded", "failed", "cancelled"):
            status.add_metric([name], by_status.get(name, 0))
        yield status
        failed = GaugeMetricFamily(
            "trainer_jobs_failed", "Failed jobs stored now, by error.type (deleting a job lowers it).", labels=["error_type"]
        )
        for cause, n in sorted(failures.items()):
            failed.add_metric([cause], n)
        yield failed
        kinds = GaugeMetricFamily(
            "trainer_stored_bytes", "Bytes in the database by kind (dataset, model, plot, checkpoint).", labels=["kind"]
        )
        for kind, size in sorted(stored.items()):
            kinds.add_metric([kind], size)
        yield kinds


class _ThisProcess(Collector):
    """Outside gunicorn (``flask run``, the tests' in-process servers) the metrics live in this process."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def _check_token() -> None:
    settings = services().settings
    if settings.single_user:  # localhost only (service.auth checked the Host), like every other route
        return
    if not settings.metrics_token:
        raise Unauthorized("/metrics needs a scrape token: set TRAINER_METRICS_TOKEN and send it as a Bearer token")
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.metrics_token.encode()):
        raise Unauthorized("/metrics takes the scrape token (TRAINER_METRICS_TOKEN) as a Bearer token, not an API token")


@bp.get("/metrics")
def metrics():
    _check_token()
    registry = CollectorRegistry(auto_describe=False)
    settings = services().settings
    if settings.metrics_dir:  # gunicorn: set by service/gunicorn_conf.py before any worker imported prometheus_client
        MultiProcessCollector(registry, settings.metrics_dir)
    else:
        registry.register(_ThisProcess())
    registry.register(JobsCollector(services().db))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
