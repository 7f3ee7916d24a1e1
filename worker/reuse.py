"""Layers of a finished job, loaded fresh from its stored bytes for every job that reuses them.

TF-MOT's ``prune_low_magnitude`` wraps layer objects in place, and training moves weights: so the base
is loaded from the database each time and cloned with its weights — the stored model never changes.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

from core import jobs
from core.artifacts import read_all
from core.db import Database
from worker.tf_env import keras


def load_base(db: Database, base_job_id: str):
    with db.session() as session:
        stored = jobs.model_artifacts(session, base_job_id)
    artifact = stored.get("keras") or stored.get("h5")
    if artifact is None:
        raise ValueError(f"job {base_job_id} has no h5 or keras model stored")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / artifact.filename
        path.write_bytes(read_all(db, artifact))
        model = keras.models.load_model(path, compile=False)  # .keras loads in safe mode: no code from the file
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def reused_layers(model, names: list[str]) -> list:
    by_name = {layer.name: layer for layer in model.layers}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"the base model has no layers {missing}")
    return [by_name[name] for name in names]


def checksums(layers) -> dict[str, str]:
    """sha256 of each layer's weights: shows what phase 1 kept and phase 2 moved."""
    out = {}
    for layer in layers:
        layer = getattr(layer, "layer", layer)  # through a pruning wrapper
        weights = layer.get_weights()
        if weights:
            digest = hashlib.sha256()
            for w in weights:
                digest.update(np.ascontiguousarray(w).tobytes())
            out[layer.name] = digest.hexdigest()
    return out
