"""Why a job stopped without succeeding: one typed cause per way it can end, each with the hint a client sees.

Defined once here; the worker (``worker.runner``, ``worker.memory_guard``), the reconciler
and the cancel of a queued job all write ``JobError.stored()`` into ``jobs.error``, and the API returns
it as the job's ``error``. The worker raises ``core.errors.JobStopped`` (or ``Diverged``) to end a job
with one of these causes. Hints name no route: the same text reaches the SDK and the CLI.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, Field


class Cause(str, enum.Enum):
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    DIVERGED = "diverged"
    WORKER_LOST = "worker_lost"
    OUT_OF_MEMORY = "out_of_memory"
    TRAINING_ERROR = "training_error"


HINTS: dict[Cause, str] = {
    Cause.CANCELLED: "the job was cancelled; submit the recipe again to rerun it",
    Cause.TIMEOUT: "raise training.max_runtime_s (up to TRAINER_MAX_RUNTIME_S) or train fewer epochs",
    Cause.DIVERGED: "lower the learning rate, clip gradients (clipnorm), use he/lecun initialization or batch norm",
    Cause.WORKER_LOST: "the worker's process stopped on every attempt; the job's logs show how far it got",
    Cause.OUT_OF_MEMORY: "use a smaller batch_size or narrower layers (activations grow with both), "
    "or ask for a worker with more memory",
    Cause.TRAINING_ERROR: "the job's logs hold the traceback",
}


class JobError(BaseModel):
    """A failed or cancelled job's ``error``: what a client can act on."""

    type: Cause
    message: str
    hint: str = ""
    epoch: int | None = Field(None, description="diverged: the epoch whose loss became NaN or infinite")
    batch: int | None = Field(None, description="diverged: the batch within that epoch")

    @classmethod
    def of(cls, cause: Cause, message: str, **extra: Any) -> JobError:
        return cls(type=cause, message=message, hint=HINTS[cause], **extra)

    def stored(self) -> dict[str, Any]:
        """The JSON written to ``jobs.error`` (the fields a cause does not use are left out)."""
        return self.model_dump(mode="json", exclude_none=True)
