"""A recipe's view of its dataset: class subset, relabelling, reshaping — described for the API, applied by the worker.

Both sides go through this module, so the sizes the API validates are the sizes the worker trains on
(the seed's "pretraining on an auxiliary task" needs exactly this: model A on some classes, model B on
a relabelled few).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from core.datasets import DatasetInfo
from core.errors import RecipeError
from core.recipe import DatasetSpec


def label_map(spec: DatasetSpec, n_classes: int) -> dict[int, int] | None:
    """Original label → trained label; None when labels are used as they are."""
    if spec.relabel:
        return {int(k): v for k, v in spec.relabel.items()}
    if spec.classes is not None:
        return {c: i for i, c in enumerate(spec.classes)}
    return None


def describe(info: DatasetInfo, spec: DatasetSpec) -> DatasetInfo:
    """What the recipe will train on, or RecipeError naming the dataset field that can't apply."""
    mapping = label_map(spec, info.n_classes)
    n_samples, n_classes, counts = info.n_samples, info.n_classes, info.class_counts
    if mapping is not None:
        unknown = sorted(c for c in mapping if c >= info.n_classes)
        if unknown:
            raise RecipeError(
                ["dataset", "classes" if spec.classes else "relabel"],
                f"dataset {info.name!r} has labels 0..{info.n_classes - 1}; no {unknown}",
            )
        if counts:
            n_samples = sum(counts[c] for c in mapping)
        elif mapping.keys() != set(range(info.n_classes)):
            raise RecipeError(["dataset", "classes"], f"dataset {info.name!r} has no per-class counts to subset")
        targets = sorted(set(mapping.values()))
        if targets != list(range(len(targets))):
            raise RecipeError(["dataset", "relabel"], f"new labels must be 0..k-1, not {targets}")
        n_classes, counts = len(targets), ()
    shape = info.feature_shape
    if spec.reshape is not None:
        if math.prod(spec.reshape) != math.prod(shape):
            raise RecipeError(
                ["dataset", "reshape"],
                f"samples have {math.prod(shape)} values {list(shape)}; {spec.reshape} holds {math.prod(spec.reshape)}",
            )
        shape = tuple(spec.reshape)
    return replace(info, n_samples=n_samples, n_classes=n_classes, feature_shape=shape, class_counts=counts)


def select(x: np.ndarray, y: np.ndarray, spec: DatasetSpec, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    mapping = label_map(spec, n_classes)
    if mapping is not None:
        keep = np.isin(y, list(mapping))
        x, y = x[keep], np.vectorize(mapping.get, otypes=[np.int64])(y[keep]) if keep.any() else y[keep]
    if spec.reshape is not None:
        x = x.reshape((len(x), *spec.reshape))
    return x, y
