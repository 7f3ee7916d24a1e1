"""Device set-up in the process that trains: memory growth before any op, and a name for the job record.

CUDA is not fork-safe, so this runs in the Celery child, never in the prefork parent.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def configure() -> str:
    """Enable GPU memory growth (so one job does not reserve the whole card) and describe the device used."""
    from worker.tf_env import tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # already initialised: growth can only be set before the first op
            log.warning("could not enable memory growth on %s: %s", gpu.name, exc)
    cpus = tf.config.list_physical_devices("CPU")
    log.info("devices: %s", ", ".join(d.name for d in gpus + cpus))
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU:0 ({details.get('device_name', 'unknown')})"
    return "CPU:0"


def training_device(description: str) -> str:
    """The TF device string to pin training to: the first visible GPU, or the CPU."""
    return "/GPU:0" if description.startswith("GPU") else "/CPU:0"
