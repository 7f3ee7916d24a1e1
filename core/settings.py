"""Every setting the service and the worker read, from the environment, in one place.

The defaults are the embedded mode: a SQLite file and Celery's SQLAlchemy broker
transport under ``var/``, so ``make run`` needs no server. Nothing else reads ``os.environ``
(except ``TF_USE_LEGACY_KERAS``, which must be set before TensorFlow is imported).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _var_dir() -> Path:
    return Path(os.environ.get("TRAINER_VAR_DIR", ROOT / "var"))


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


INFERENCE_MODES = ("full", "off")


class ConfigError(ValueError):
    """Settings that contradict each other: the process refuses to start rather than guess."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    #: Rows of an artifact are at most this big: a BLOB/bytea is read whole, so big models go in chunks.
    artifact_chunk_bytes: int = 4 * 1024 * 1024
    max_params: int = 5_000_000
    max_epochs: int = 1000
    max_upload_bytes: int = 64 * 1024 * 1024
    max_request_bytes: int = 1024 * 1024
    #: Longest a job may run; Redis' visibility timeout is set above it so a long job is not redelivered.
    max_runtime_s: int = 6 * 3600
    heartbeat_interval_s: float = 2.0
    #: A running job whose heartbeat is older than this is taken as lost.
    heartbeat_timeout_s: float = 60.0
    #: A queued job not taken by a worker within this time is sent again.
    redispatch_after_s: float = 120.0
    reconcile_interval_s: float = 10.0
    max_attempts: int = 3
    broker_polling_interval_s: float = 0.1
    log_level: str = "INFO"
    #: ``token:owner,…``; more can be created with ``python -m core.tokens create``.
    api_tokens: str = ""
    #: No tokens: every request acts as owner "default". Only for a local ``make run``; it says so in its log.
    single_user: bool = False
    max_queued_per_owner: int = 100
    idempotency_ttl_s: float = 24 * 3600
    #: Write a resumable checkpoint (weights, optimizer state, pruning step) at most this often.
    checkpoint_interval_s: float = 0.0
    #: Checkpoints over 256 KiB are spaced so that writing them takes at most this share of a job's time; 0: every epoch.
    checkpoint_max_share: float = 0.05
    #: How long a worker keeps retrying to store a finished job through a database outage.
    db_retry_s: float = 600.0
    #: An upload's arrays, decompressed, may declare at most this many bytes (checked from headers first).
    max_dataset_bytes: int = 512 * 1024 * 1024
    #: Admission refuses a recipe whose estimated training memory (weights, optimizer slots,
    #: pruning masks, activations × batch, the dataset) is over this.
    max_training_bytes: int = 4 * 1024 * 1024 * 1024
    #: Datasets, models and checkpoints one owner may keep in the database.
    max_stored_bytes_per_owner: int = 2 * 1024 * 1024 * 1024
    #: Requests one token may make per minute (429 with Retry-After beyond it); 0 turns the limit off.
    rate_limit_per_minute: int = 600
    #: Lines of a job's own log kept in the database; later lines are counted, not stored.
    max_log_lines_per_job: int = 2000
    #: The worker kills a job's process whose own (private) memory passes this and fails the job
    #: ``out_of_memory``; 0: twice ``max_training_bytes`` (admission's estimate is good to 2×).
    max_job_memory_bytes: int = 0
    #: The cgroup file whose ``oom_kill`` count tells a kernel OOM kill from another SIGKILL; "": found from
    #: /proc/self/cgroup (v2 ``memory.events``, v1 ``memory.oom_control``).
    oom_events_path: str = ""
    #: Single-user mode answers only requests whose Host is one of these (DNS rebinding).
    allowed_hosts: str = "localhost,127.0.0.1,[::1]"
    #: An uploaded model (.keras or .h5) may be at most this big as sent (413 beyond, counted on the bytes read).
    max_model_bytes: int = 256 * 1024 * 1024
    #: An inspection begun this long ago and not finished is taken as lost (its process died): begun again, up to
    #: ``max_attempts`` times, then the model is rejected.
    inspect_timeout_s: float = 600.0
    #: Where Debian's package dataset-fashion-mnist puts the four IDX .gz files of the built-in fashion_mnist.
    fashion_mnist_dir: str = "/usr/share/datasets/fashion-mnist"
    #: ``full``: every succeeded job measures its inference (``worker.inference``) and its dense twin's; ``off``: none
    #: (the test suite's default, where hundreds of jobs would each pay a few seconds for it).
    inference: str = "full"
    #: Timed batch-1 calls per format and thread count (after warm-up calls that are not counted).
    inference_calls: int = 200
    #: ``text`` (human-readable, ``make run``) or ``json`` (one JSON object a line, compose): see ``core.log_context``.
    log_format: str = "text"
    #: The bearer token Prometheus sends to read the API's /metrics when tokens are on; "": /metrics is refused.
    metrics_token: str = ""
    #: The worker serves its own /metrics (per-job training and checkpoint seconds, …) on this port; 0: off.
    worker_metrics_port: int = 0
    #: …on this address: no token is asked there, so keep it on a private network (compose: not published).
    worker_metrics_addr: str = "127.0.0.1"
    #: PROMETHEUS_MULTIPROC_DIR: where one process tree (gunicorn's workers, or a Celery worker's children) keeps
    #: prometheus-client's multiprocess files; wiped when that tree starts, so one directory per tree. "": a fresh
    #: temporary directory per start, which the starting process puts into PROMETHEUS_MULTIPROC_DIR itself.
    metrics_dir: str = ""
    #: How often a process re-reads the versions of the jobs its ``?wait=`` requests wait on (one query for all).
    wait_poll_interval_s: float = 0.1
    #: How long a stopping worker has before it is killed (compose's ``stop_grace_period``): a job it hands back
    #: finishes its epoch first when that is expected within half of this, else stops at the next batch.
    stop_grace_s: float = 30.0
    #: ``python -m core.retention`` deletes finished jobs older than this many days (not pinned, not a transfer
    #: base); 0: off, nothing is ever deleted.
    retention_days: float = 0.0

    def __post_init__(self) -> None:
        if self.inference not in INFERENCE_MODES:
            raise ConfigError(f"TRAINER_INFERENCE is {self.inference!r}; it must be one of {', '.join(INFERENCE_MODES)}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"TRAINER_LOG_FORMAT is {self.log_format!r}; it is text or json")
        if self.single_user and self.api_tokens.strip():
            raise ConfigError(
                "TRAINER_SINGLE_USER is set but so is TRAINER_API_TOKENS: single-user mode would "
                "ignore those tokens and let anyone in; unset one of them"
            )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: Any) -> Settings:
    var = _var_dir()
    values: dict[str, Any] = dict(
        database_url=os.environ.get("DATABASE_URL", f"sqlite:///{var / 'trainer.sqlite'}"),
        broker_url=os.environ.get("CELERY_BROKER_URL", f"sqla+sqlite:///{var / 'broker.sqlite'}"),
        artifact_chunk_bytes=_int("TRAINER_ARTIFACT_CHUNK_BYTES", 4 * 1024 * 1024),
        max_params=_int("TRAINER_MAX_PARAMS", 5_000_000),
        max_epochs=_int("TRAINER_MAX_EPOCHS", 1000),
        max_upload_bytes=_int("TRAINER_MAX_UPLOAD_BYTES", 64 * 1024 * 1024),
        max_request_bytes=_int("TRAINER_MAX_REQUEST_BYTES", 1024 * 1024),
        max_runtime_s=_int("TRAINER_MAX_RUNTIME_S", 6 * 3600),
        heartbeat_interval_s=_float("TRAINER_HEARTBEAT_INTERVAL_S", 2.0),
        heartbeat_timeout_s=_float("TRAINER_HEARTBEAT_TIMEOUT_S", 60.0),
        redispatch_after_s=_float("TRAINER_REDISPATCH_AFTER_S", 120.0),
        reconcile_interval_s=_float("TRAINER_RECONCILE_INTERVAL_S", 10.0),
        max_attempts=_int("TRAINER_MAX_ATTEMPTS", 3),
        broker_polling_interval_s=_float("TRAINER_BROKER_POLLING_INTERVAL_S", 0.1),
        log_level=os.environ.get("TRAINER_LOG_LEVEL", "INFO"),
        api_tokens=os.environ.get("TRAINER_API_TOKENS", ""),
        single_user=os.environ.get("TRAINER_SINGLE_USER", "") in ("1", "true", "yes"),
        max_queued_per_owner=_int("TRAINER_MAX_QUEUED_PER_OWNER", 100),
        idempotency_ttl_s=_float("TRAINER_IDEMPOTENCY_TTL_S", 24 * 3600),
        checkpoint_interval_s=_float("TRAINER_CHECKPOINT_INTERVAL_S", 0.0),
        checkpoint_max_share=_float("TRAINER_CHECKPOINT_MAX_SHARE", 0.05),
        db_retry_s=_float("TRAINER_DB_RETRY_S", 600.0),
        max_dataset_bytes=_int("TRAINER_MAX_DATASET_BYTES", 512 * 1024 * 1024),
        max_training_bytes=_int("TRAINER_MAX_TRAINING_BYTES", 4 * 1024 * 1024 * 1024),
        max_stored_bytes_per_owner=_int("TRAINER_MAX_STORED_BYTES_PER_OWNER", 2 * 1024 * 1024 * 1024),
        rate_limit_per_minute=_int("TRAINER_RATE_LIMIT_PER_MINUTE", 600),
        max_log_lines_per_job=_int("TRAINER_MAX_LOG_LINES_PER_JOB", 2000),
        max_job_memory_bytes=_int("TRAINER_MAX_JOB_MEMORY_BYTES", 0),
        oom_events_path=os.environ.get("TRAINER_OOM_EVENTS_PATH", ""),
        allowed_hosts=os.environ.get("TRAINER_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]"),
        max_model_bytes=_int("TRAINER_MAX_MODEL_BYTES", 256 * 1024 * 1024),
        inspect_timeout_s=_float("TRAINER_INSPECT_TIMEOUT_S", 600.0),
        fashion_mnist_dir=os.environ.get("TRAINER_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"),
        inference=os.environ.get("TRAINER_INFERENCE", "full"),
        inference_calls=_int("TRAINER_INFERENCE_CALLS", 200),
        log_format=os.environ.get("TRAINER_LOG_FORMAT", "text"),
        metrics_token=os.environ.get("TRAINER_METRICS_TOKEN", ""),
        worker_metrics_port=_int("TRAINER_WORKER_METRICS_PORT", 0),
        worker_metrics_addr=os.environ.get("TRAINER_WORKER_METRICS_ADDR", "127.0.0.1"),
        metrics_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""),
        wait_poll_interval_s=_float("TRAINER_WAIT_POLL_INTERVAL_S", 0.1),
        stop_grace_s=_float("TRAINER_STOP_GRACE_S", 30.0),
        retention_days=_float("TRAINER_RETENTION_DAYS", 0.0),
    )
    values.update(overrides)
    if values["database_url"].startswith("sqlite:///"):
        Path(values["database_url"].removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if values["broker_url"].startswith("sqla+sqlite:///"):
        Path(values["broker_url"].removeprefix("sqla+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return Settings(**values)
