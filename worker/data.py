"""Arrays for a job: a built-in set or an upload read back from the database, split as planned.

A job reads its dataset once (``runner`` calls ``load`` once; every phase — frozen, fine-tune, the test
evaluation — trains on the same ``Splits``), and Fashion-MNIST stays uint8 until the split has picked
the rows a job uses, so only those are widened to float32.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from core import idx, selection, uploads
from core.artifacts import read_all
from core.datasets import BUILTIN, FASHION_MNIST_FILES, data_files, input_divisor, install_hint, missing_files
from core.db import Database
from core.errors import DatasetError
from core.models import Artifact
from core.recipe import DatasetSpec
from core.settings import Settings, load_settings
from core.splits import split_counts

#: A child of the job's logger: the read (and its time) is in the job's own log.
log = logging.getLogger("trainer.job.data")


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray


def _builtin(name: str, settings: Settings | None = None) -> uploads.Arrays:
    if name == "fashion_mnist":
        return fashion_mnist(settings or load_settings())
    from sklearn import datasets as sk

    loader = {"digits": sk.load_digits, "iris": sk.load_iris, "wine": sk.load_wine, "breast_cancer": sk.load_breast_cancer}[
        name
    ]
    bunch = loader()
    return uploads.Arrays(bunch.data.astype(np.float32), bunch.target.astype(np.int64))


def fashion_mnist(settings: Settings) -> uploads.Arrays:
    """The four IDX files of Debian's dataset-fashion-mnist, checked against the figures the API promised
    (``core.datasets.BUILTIN``): uint8 images, labels 0..9, the official train/t10k split."""
    info = BUILTIN["fashion_mnist"]
    missing = missing_files(info.name, settings)
    if missing:
        raise DatasetError(
            f"dataset 'fashion_mnist' is not installed on this worker (missing {', '.join(missing)}); "
            f"install it with `{install_hint(info)}`"
        )
    started = time.perf_counter()
    paths = data_files(info.name, settings)
    parts = {part: idx.read(paths[part], settings.max_dataset_bytes) for part in FASHION_MNIST_FILES}
    expected = {
        "x": (info.n_samples, *info.feature_shape),
        "y": (info.n_samples,),
        "x_test": (info.n_test_samples, *info.feature_shape),
        "y_test": (info.n_test_samples,),
    }
    for part, array in parts.items():
        if array.shape != expected[part] or array.dtype != np.uint8:
            raise DatasetError(f"{paths[part]} holds {array.dtype} {list(array.shape)}, not uint8 {list(expected[part])}")
    for part in ("y", "y_test"):
        if parts[part].max() >= info.n_classes:
            raise DatasetError(f"{paths[part]} has label {int(parts[part].max())}; classes are 0..{info.n_classes - 1}")
    log.info(
        "read fashion_mnist from %s: %d training and %d test images (uint8) in %.2f s",
        settings.fashion_mnist_dir,
        len(parts["x"]),
        len(parts["x_test"]),
        time.perf_counter() - started,
    )
    return uploads.Arrays(parts["x"], parts["y"].astype(np.int64), parts["x_test"], parts["y_test"].astype(np.int64))


def load(db: Database | None, spec: DatasetSpec) -> uploads.Arrays:
    """``db`` may be None for a built-in (benches, tests): settings then come from the environment."""
    if spec.name in BUILTIN:
        return _builtin(spec.name, db.settings if db is not None else None)
    if db is None:
        raise ValueError(f"dataset {spec.name!r} is an upload: reading it needs the database")
    with db.session() as session:
        artifact = session.execute(
            select(Artifact).where(Artifact.dataset_id == spec.name, Artifact.kind == "dataset")
        ).scalar_one_or_none()
    if artifact is None:
        raise DatasetError(f"dataset {spec.name!r} no longer exists")
    # accepted by the API under its limits already; stored compact (uint8 stays uint8) until the split
    return uploads.with_int64_labels(uploads.parse_npz(read_all(db, artifact), max_bytes=None))


def split(arrays: uploads.Arrays, spec: DatasetSpec, seed: int) -> Splits:
    """Selected (classes, relabel, reshape), shuffled with the recipe's seed, and split in the counts
    ``core.splits.split_counts`` gave the API's plan; ``limit`` keeps the first N training samples."""
    n_classes = int(arrays.y.max()) + 1
    x, y = selection.select(arrays.x, arrays.y, spec, n_classes)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    own_test = None if arrays.test is None else selection.select(*arrays.test, spec, n_classes)
    counts = split_counts(len(x), None if own_test is None else len(own_test[0]), spec)
    pool, n_val = counts.pool, counts.validation
    x_test, y_test = own_test if own_test is not None else (x[pool + n_val :], y[pool + n_val :])
    keep = counts.train
    divisor = input_divisor(str(arrays.x.dtype))
    x_val = _inputs(x[pool : pool + n_val], divisor) if n_val else None
    y_val = y[pool : pool + n_val] if n_val else None
    return Splits(_inputs(x[:keep], divisor), y[:keep], x_val, y_val, _inputs(x_test, divisor), y_test)


def _inputs(x: np.ndarray, divisor: float) -> np.ndarray:
    """float32 model inputs from stored values (Fashion-MNIST's uint8 pixels / 255), made after the split so
    rows a job does not use are never widened."""
    if divisor == 1.0:
        return x.astype(np.float32, copy=False)
    return np.divide(x, np.float32(divisor), dtype=np.float32)


def shaped_for_output(splits: Splits, output_shape: tuple) -> Splits:
    """Labels in the shape of the model's output, once, so fit, evaluate and the diagnostics probe see the same.

    A one-unit head (sigmoid + binary_crossentropy, or a linear mse regression) predicts (N, 1): its labels
    become (N, 1) floats. Keras's fit squeezes such a prediction to meet (N,) labels, but a loss called
    directly does not (the probe failed on exactly this), and mse over a squeezed batch is one number per
    batch rather than one per sample. A k-unit softmax keeps (N,) integer labels for
    sparse_categorical_crossentropy. An autoencoder's targets are its inputs: its labels are not used.
    """
    if len(output_shape) != 2 or output_shape[-1] != 1:
        return splits

    def column(y: np.ndarray) -> np.ndarray:
        return y.reshape(-1, 1).astype(np.float32)

    y_val = None if splits.y_val is None else column(splits.y_val)
    return Splits(splits.x_train, column(splits.y_train), splits.x_val, y_val, splits.x_test, column(splits.y_test))


def standardization(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per feature (per channel for images) of the training inputs only.

    A feature constant over the training rows gets a variance of 1 (scikit-learn's choice): Keras divides by
    max(std, 1e-7), so a never-inked pixel of a small training set turned a test image's ink into ~1e7."""
    axes = tuple(range(x_train.ndim - 1))
    var = x_train.var(axis=axes)
    return x_train.mean(axis=axes), np.where(var < 1e-12, 1.0, var).astype(var.dtype)


def to_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None):
    """In memory, cached, shuffled per epoch with a fixed seed, prefetched: the pipeline is never the bottleneck."""
    from worker.tf_env import tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
