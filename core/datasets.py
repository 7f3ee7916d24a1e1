"""What the API knows about datasets without loading them: shapes, class counts, sample counts.

The built-ins are scikit-learn's bundled sets (no download at run time). Their figures are fixed
here so the API never imports scikit-learn; a test checks them against the real loaders.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import RecipeError
from core.models import Dataset


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    n_samples: int
    feature_shape: tuple[int, ...]
    n_classes: int
    description: str = ""
    n_test_samples: int = 0  # > 0 when the dataset brings its own test split (uploads with x_test)
    source: str = "builtin"
    class_counts: tuple[int, ...] = ()  # training samples per label (the test split's are not counted)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetInfo":
        return cls(**{**data, "feature_shape": tuple(data["feature_shape"]),
                      "class_counts": tuple(data.get("class_counts", ()))})


BUILTIN = {
    info.name: info
    for info in [
        DatasetInfo("digits", 1797, (64,), 10, "8×8 images of handwritten digits, pixels 0–16 (scikit-learn); "
                    "reshape to [8, 8, 1] for a CNN", class_counts=(178, 182, 177, 183, 181, 182, 181, 179, 174, 180)),
        DatasetInfo("iris", 150, (4,), 3, "Iris flowers, 4 measurements (scikit-learn)", class_counts=(50, 50, 50)),
        DatasetInfo("wine", 178, (13,), 3, "Wine chemistry, 13 features (scikit-learn)", class_counts=(59, 71, 48)),
        DatasetInfo("breast_cancer", 569, (30,), 2, "Breast cancer diagnostics, 30 features (scikit-learn)",
                    class_counts=(212, 357)),
    ]
}


def lookup(session: Session, name: str, owner: str) -> DatasetInfo:
    if name in BUILTIN:
        return BUILTIN[name]
    row = session.execute(select(Dataset).where(Dataset.id == name, Dataset.owner == owner)).scalar_one_or_none()
    if row is None:
        raise RecipeError(["dataset", "name"], f"unknown dataset {name!r}; GET /v1/datasets lists them")
    return DatasetInfo.from_dict(row.info)


def check_labels(info: DatasetInfo, loss: str, output_units: int) -> None:
    if loss in ("sparse_categorical_crossentropy", "categorical_crossentropy") and output_units != info.n_classes:
        raise RecipeError(
            ["model", "layers", -1, "units"],
            f"the output layer has {output_units} units but dataset {info.name!r} has {info.n_classes} classes",
        )
    if loss == "binary_crossentropy" and (info.n_classes != 2 or output_units != 1):
        raise RecipeError(
            ["training", "loss"],
            f"binary_crossentropy needs a 2-class dataset and 1 output unit "
            f"(dataset has {info.n_classes} classes, output has {output_units} units)",
        )

