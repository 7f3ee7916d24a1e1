"""The domain's errors, grouped by what caused them; only ``service/problems.py`` turns them into HTTP.

A class says what went wrong, never how it is sent: no status, no header, no route. What a transport
needs beyond the message is kept as data (``loc``, ``retry_after_s``) for the mapping to use.
Modelled on httpx's ``_exceptions.py``::

    TrainerError
    ├── InvalidInput              the request itself is wrong: sent again unchanged, it fails again
    │   ├── MalformedRequest      not a request at all: bad JSON, a header out of range, a Host not served
    │   ├── UnsupportedMediaType
    │   ├── RecipeError           a well-formed recipe that cannot be trained as asked (``loc`` names the field)
    │   │   ├── UnknownDataset
    │   │   ├── ShapeError        a layer cannot take its input's shape
    │   │   └── LayerChoiceError  ``pruning.layers`` names a layer that is absent or cannot be pruned
    │   ├── DatasetError          an upload that is not a dataset this service can read
    │   ├── ModelError            an uploaded model this service will not load (``ModelRefused``: a layer or object
    │   │                         outside the allowlist, named)
    │   └── IdempotencyMismatch   a key reused with a different body
    ├── Unauthorized              no valid credential
    ├── NotFound                  no such thing for this owner
    ├── Conflict                  the thing's current state does not allow it
    ├── LimitExceeded             allowed, but over a limit of this server
    │   ├── QueueFull             too many queued jobs: wait for some to start
    │   ├── RateLimited           too many requests this minute
    │   ├── PayloadTooLarge
    │   ├── DatasetTooLarge       (also a DatasetError) its arrays would take more memory than allowed
    │   ├── ModelTooLarge         (also a ModelError) an archive's members declare more bytes than allowed
    │   └── StorageQuotaExceeded
    ├── Unavailable               a dependency (database, broker) is down: retry later
    ├── CorruptArtifact           a stored file fails its integrity check
    └── JobStopped                (worker) a job ended early for a typed cause
        └── Diverged
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.causes import Cause, JobError


class TrainerError(Exception):
    """Base of every error the service raises on purpose; anything else is a bug (an internal error)."""

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


# -- the request is wrong ------------------------------------------------------------------------------


class InvalidInput(TrainerError):
    """The client's input cannot be used; the message says which part and why."""


class MalformedRequest(InvalidInput):
    """The request cannot even be read as one: unparsable JSON, a header out of range, an unserved Host."""


class UnsupportedMediaType(InvalidInput):
    """The body is not of a media type this endpoint reads."""


class RecipeError(InvalidInput):
    """The recipe is valid JSON of the right shape but cannot be trained as asked; ``loc`` names the field."""

    def __init__(self, loc: Sequence[str | int], msg: str):
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}", errors=[{"loc": list(loc), "msg": msg}])
        self.loc, self.msg = list(loc), msg


class UnknownDataset(RecipeError):
    """The recipe names a dataset that is neither built in nor uploaded by this owner."""

    def __init__(self, name: str):
        super().__init__(["dataset", "name"], f"unknown dataset {name!r}")
        self.name = name


class ShapeError(RecipeError):
    """Layer ``index`` cannot take the shape it is given; ``msg`` says why, the caller may add context."""

    def __init__(self, index: int, msg: str):
        super().__init__(["model", "layers", index], msg)
        self.index = index


class LayerChoiceError(RecipeError):
    """Entry ``index`` of ``pruning.layers`` names a layer the model lacks, or one TF-MOT cannot prune."""

    def __init__(self, index: int, msg: str):
        super().__init__(["pruning", "layers", index], msg)
        self.index = index


class DatasetError(InvalidInput):
    """An upload is not a dataset this service can read (format, shape, labels, size of its parts)."""


class ModelError(InvalidInput):
    """An uploaded file is not a model this service loads: not a .keras zip or an HDF5 file, a missing or
    unreadable part, a config that is not a Keras model's."""


class ModelRefused(ModelError):
    """The model's config names something that could run code or is not a stock Keras layer: ``layer`` and
    ``class_name`` say which, ``loc`` where in the config."""

    def __init__(self, layer: str, class_name: str, why: str, loc: Sequence[str | int] = ()):
        layer, class_name = layer[:100], class_name[:100]
        super().__init__(
            f"layer {layer!r} ({class_name}): {why}",
            errors=[{"loc": ["file", *loc], "msg": f"layer {layer!r} ({class_name}): {why}"}],
        )
        self.layer, self.class_name, self.why = layer, class_name, why


class IdempotencyMismatch(InvalidInput):
    """An idempotency key seen before came with a different body: it cannot name two requests."""


# -- who is asking, and what about -----------------------------------------------------------------------


class Unauthorized(TrainerError):
    """No credential, or one that is unknown, revoked or expired."""


class NotFound(TrainerError):
    """No such resource for this owner (another owner's things are not found either, by design)."""


class Conflict(TrainerError):
    """The resource's current state forbids the request (e.g. cancelling a finished job); reading it again
    shows why."""


# -- limits and availability ---------------------------------------------------------------------------


class LimitExceeded(TrainerError):
    """Allowed in itself, but over a limit of this server; ``retry_after_s`` is set when waiting helps."""

    def __init__(self, detail: str, *, retry_after_s: int | None = None):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class QueueFull(LimitExceeded):
    """The owner has as many queued jobs as allowed; one starting makes room."""


class RateLimited(LimitExceeded):
    """The credential made more requests this minute than allowed."""


class PayloadTooLarge(LimitExceeded):
    """The body is over the size this endpoint reads; sending it again does not help."""


class DatasetTooLarge(LimitExceeded, DatasetError):
    """The arrays an upload declares would take more memory than ``max_dataset_bytes``."""


class ModelTooLarge(LimitExceeded, ModelError):
    """An uploaded archive's members declare more bytes than the limit (a zip bomb among them)."""


class StorageQuotaExceeded(LimitExceeded):
    """What the request would store does not fit in the owner's quota; deleting things makes room."""


class Unavailable(TrainerError):
    """A dependency (database, broker) cannot be reached; the same request may succeed later."""

    def __init__(self, detail: str, *, retry_after_s: int | None = None):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class CorruptArtifact(TrainerError):
    """A stored file is missing a part or fails its sha256 check: it must not be served."""


# -- in the worker -------------------------------------------------------------------------------------


class JobStopped(TrainerError):
    """Raised in the worker when a job ends early for a typed cause; the runner records ``error()``."""

    def __init__(self, cause: Cause, message: str, **extra: Any):
        super().__init__(message)
        self.cause, self.extra = cause, extra

    def error(self) -> JobError:
        return JobError.of(self.cause, str(self), **self.extra)


class Diverged(JobStopped):
    """The loss became NaN or infinite at ``epoch``/``batch``: training cannot recover from it."""

    def __init__(self, epoch: int, batch: int, loss: float):
        super().__init__(Cause.DIVERGED, f"the loss became {loss} in epoch {epoch}, batch {batch}", epoch=epoch, batch=batch)
        self.epoch, self.batch = epoch, batch
