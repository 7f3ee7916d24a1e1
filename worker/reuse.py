"""Layers of a finished job or an uploaded model, loaded fresh from their stored bytes for every job that
reuses them.

TF-MOT's ``prune_low_magnitude`` wraps layer objects in place, and training moves weights: so the base
is loaded from the database each time and cloned with its weights — the stored model never changes (an
uploaded model's bytes are only read; its sha256 stays what the upload gave).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

from core import jobs, model_store
from core.artifacts import read_all
from core.db import Database
from core.recipe import Recipe
from worker import builder
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


def load_uploaded(db: Database, model_id: str, owner: str):
    """An uploaded model, loaded with Keras's safe mode (no code from the file runs: inspection refused every
    model naming a Lambda or a class outside its allowlist before its status could become ``ready``)."""
    with db.session() as session:
        row = model_store.get(session, model_id, owner)
        if row.status != "ready":
            raise ValueError(f"model {model_id} is {row.status}; only a ready model can be a base")
        data, suffix = model_store.read_bytes(session, model_id), ".keras" if row.format == "keras" else ".h5"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"base{suffix}"
        path.write_bytes(data)
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def on_base(base, recipe: Recipe, whole: bool):
    """The model a job on an uploaded base trains: the base itself (reuse "all"), or the recipe's head on the
    input of the base's output layer (reuse "all_but_output"), for a Sequential and a functional base alike."""
    if whole:
        return base
    features = base.layers[-1].input
    for index, spec in enumerate(recipe.model.layers):
        for layer in builder.build_layers(spec, recipe, index):
            features = layer(features)
    return keras.Model(base.inputs, features, name=base.name)


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
