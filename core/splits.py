"""Split arithmetic: how many samples train, validate and test — the one computation the API plans with
and the worker slices by, so the steps admission checked are the steps the worker runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.recipe import DatasetSpec


def split_sizes(n: int, test_fraction: float, validation_fraction: float) -> tuple[int, int, int]:
    """(train, validation, test) counts of a dataset without its own test split."""
    n_test = max(1, math.ceil(n * test_fraction))
    rest = n - n_test
    n_val = math.ceil(rest * validation_fraction) if validation_fraction > 0 else 0
    return rest - n_val, n_val, n_test


@dataclass(frozen=True)
class SplitCounts:
    """Counts over the shuffled samples: rows ``[0, pool)`` are for training (the first ``train`` of them
    are used, after ``limit``), the next ``validation`` validate, and, without a test split of the
    dataset's own, the rest test."""

    pool: int
    train: int
    validation: int
    test: int


def split_counts(n_samples: int, n_test_samples: int | None, spec: DatasetSpec) -> SplitCounts:
    """``n_test_samples`` is None unless the dataset brings its own test split; then only validation is taken
    from the ``n_samples`` (as selected by ``spec``)."""
    if n_test_samples is not None:
        n_val = round(n_samples * spec.validation_fraction)
        pool, n_test = n_samples - n_val, n_test_samples
    else:
        pool, n_val, n_test = split_sizes(n_samples, spec.test_fraction, spec.validation_fraction)
    train = min(pool, spec.limit) if spec.limit else pool
    return SplitCounts(pool=pool, train=train, validation=n_val, test=n_test)
