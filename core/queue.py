"""The Celery application's configuration, shared by the API (which only sends) and the worker.

Only a job id ever travels on the queue; everything else is read from the database.
"""

from __future__ import annotations

import logging

from celery import Celery

from core.settings import Settings

TRAIN_TASK = "trainer.train_job"
#: An uploaded model's inspection (``worker.inspection``); its message carries only the model's id.
INSPECT_TASK = "trainer.inspect_model"
log = logging.getLogger(__name__)


def make_celery(settings: Settings) -> Celery:
    app = Celery("trainer", broker=settings.broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A long GPU job must survive its worker dying: ack after the task, and give it back if the worker is lost.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A fresh child per job returns all GPU memory to the device when the job ends.
        worker_max_tasks_per_child=1,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_default_queue="training",
    )
    if settings.broker_url.startswith("sqla+"):
        # kombu hands every transport option to create_engine here, so the poll interval (1 s by
        # default, the floor on submit-to-running) is set on the transport class instead.
        from kombu.transport import sqlalchemy as sqla_transport

        sqla_transport.Transport.polling_interval = settings.broker_polling_interval_s
    else:
        app.conf.broker_transport_options = {
            # Longer than the longest job, or Redis would hand a running job to a second worker.
            "visibility_timeout": settings.max_runtime_s + 3600,
            "polling_interval": settings.broker_polling_interval_s,
        }
    return app


def dispatch(celery: Celery, job_id: str, task: str = TRAIN_TASK) -> bool:
    """Send the job id (or, for ``INSPECT_TASK``, the model id); False when the broker can't be reached (the job
    stays queued, the model inspecting, for the reconciler)."""
    try:
        celery.send_task(
            task,
            args=[job_id],
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5},
        )
        return True
    except Exception as exc:  # kombu raises OperationalError and friends; any failure means "not sent".
        log.warning("could not dispatch %s %s: %s", task, job_id, exc)
        return False
