"""Arrays for a job: a built-in scikit-learn set or an upload read back from the database, split as planned."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from core import selection, uploads
from core.artifacts import read_all
from core.datasets import BUILTIN
from core.db import Database
from core.errors import DatasetError
from core.models import Artifact
from core.recipe import DatasetSpec, split_sizes


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray


def _builtin(name: str) -> uploads.Arrays:
    from sklearn import datasets as sk

    loader = {"digits": sk.load_digits, "iris": sk.load_iris, "wine": sk.load_wine,
              "breast_cancer": sk.load_breast_cancer}[name]
    bunch = loader()
    return uploads.Arrays(bunch.data.astype(np.float32), bunch.target.astype(np.int64))


def load(db: Database, spec: DatasetSpec) -> uploads.Arrays:
    if spec.name in BUILTIN:
        return _builtin(spec.name)
    with db.session() as session:
        artifact = session.execute(
            select(Artifact).where(Artifact.dataset_id == spec.name, Artifact.kind == "dataset")
        ).scalar_one_or_none()
    if artifact is None:
        raise DatasetError(f"dataset {spec.name!r} no longer exists")
    return uploads.parse_npz(read_all(db, artifact))


def split(arrays: uploads.Arrays, spec: DatasetSpec, seed: int) -> Splits:
    """Selected (classes, relabel, reshape), shuffled with the recipe's seed, and split in the sizes
    ``core.recipe.split_sizes`` promised the API; ``limit`` then keeps the first N training samples."""
    n_classes = int(arrays.y.max()) + 1
    x, y = selection.select(arrays.x, arrays.y, spec, n_classes)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    if arrays.x_test is not None:
        n_val = round(len(x) * spec.validation_fraction)
        n_train = len(x) - n_val
        x_test, y_test = selection.select(arrays.x_test, arrays.y_test, spec, n_classes)
    else:
        n_train, n_val, _ = split_sizes(len(x), spec.test_fraction, spec.validation_fraction)
        x_test, y_test = x[n_train + n_val:], y[n_train + n_val:]
    val = (x[n_train:n_train + n_val], y[n_train:n_train + n_val]) if n_val else (None, None)
    keep = min(n_train, spec.limit or n_train)
    return Splits(x[:keep], y[:keep], val[0], val[1], x_test, y_test)


def standardization(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per feature (per channel for images) of the training inputs only."""
    axes = tuple(range(x_train.ndim - 1))
    return x_train.mean(axis=axes), x_train.var(axis=axes)


def to_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None):
    """In memory, cached, shuffled per epoch with a fixed seed, prefetched: the pipeline is never the bottleneck."""
    from worker.tf_env import tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
