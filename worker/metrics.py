"""The worker's own Prometheus metrics, served by the Celery parent on ``TRAINER_WORKER_METRICS_PORT``.

Each job trains in a forked child that exits when the job ends, so the children write through prometheus-client's
multiprocess files (the parent set ``PROMETHEUS_MULTIPROC_DIR`` before importing this module, see
``worker.celery_app``) and the parent's HTTP server adds up the files of every child it ran. Counters and
histograms only: a dead child's files stay and keep counting, which is what a total wants. What the database
already knows (jobs by status, failed jobs by type, stored bytes) is the API's /metrics, read at scrape time.

No token is asked here: the port is bound to ``TRAINER_WORKER_METRICS_ADDR`` (127.0.0.1 unless set; the compose
network in the stack, not published).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from core.settings import Settings

log = logging.getLogger(__name__)
SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, float("inf"))

QUEUE_WAIT = Histogram(
    "trainer_job_queue_wait_seconds", "From submission to a worker taking the job (first attempts).", buckets=SECONDS
)
JOB_SECONDS = Histogram(
    "trainer_job_duration_seconds", "One attempt, from being taken to its end, by how it ended.", ["status"], buckets=SECONDS
)
TRAINING_SECONDS = Histogram(
    "trainer_job_training_seconds", "Per job: seconds spent training (model.fit and the fine-tune phase).", buckets=SECONDS
)
CHECKPOINT_SECONDS = Histogram(
    "trainer_checkpoint_seconds",
    "Writing one resumable checkpoint, to its commit.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")),
)
EPOCHS = Counter("trainer_epochs_trained", "Epochs trained (an epoch trained again after a resume counts again).")
RECONCILER = Counter(
    "trainer_reconciler_actions",
    "What the reconciler did: redispatched (queued, not taken), requeued (silent worker), failed_worker_lost.",
    ["action"],
)


def serve(settings: Settings, directory: str) -> None:
    """The parent's HTTP server (a daemon thread) over every child's files."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, directory)
    start_http_server(settings.worker_metrics_port, settings.worker_metrics_addr, registry=registry)
    log.info("worker metrics on http://%s:%d/metrics", settings.worker_metrics_addr, settings.worker_metrics_port)
