"""Client for the Keras training service: a Python SDK (``Client``, ``Job``) and the ``trainer`` CLI.

Talks to the service over HTTP only, so it installs and runs without TensorFlow or database drivers.
"""

from trainer_client.sdk import (
    ChecksumMismatch,
    Client,
    Download,
    Job,
    TrainerClientError,
    WaitTimeout,
    sha256_file,
    verify_sha256,
)

__all__ = [
    "ChecksumMismatch",
    "Client",
    "Download",
    "Job",
    "TrainerClientError",
    "WaitTimeout",
    "sha256_file",
    "verify_sha256",
]


def __getattr__(name: str) -> type[TrainerClientError]:
    """``from trainer_client import TrainerError`` (the name README used to show) still works, with a warning."""
    from trainer_client import sdk

    alias: type[TrainerClientError] = getattr(sdk, name)  # sdk.__getattr__ warns, then gives the class
    return alias
