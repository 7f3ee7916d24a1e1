"""What the API knows about datasets without loading them: shapes, class counts, sample counts.

The built-ins are scikit-learn's bundled sets and Fashion-MNIST from Debian's ``dataset-fashion-mnist``
package (no download at run time). Their figures are fixed here so the API never imports scikit-learn
nor reads 30 MB of IDX files to list them; tests check them against the real loaders and files. A
built-in whose files are not installed is listed as unavailable, and a recipe naming it is a 422 that
says how to install it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import RecipeError, UnknownDataset
from core.models import Dataset
from core.settings import Settings


def input_divisor(storage_dtype: str) -> float:
    """uint8 inputs are pixels (Fashion-MNIST's, or an upload of images): the model sees them / 255, so the same
    images train the same whether built in or uploaded. Every other dtype is used as stored."""
    return 255.0 if storage_dtype == "uint8" else 1.0


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    n_samples: int
    feature_shape: tuple[int, ...]
    n_classes: int
    description: str = ""
    n_test_samples: int = 0  # > 0 when the dataset brings its own test split (uploads with x_test, fashion_mnist)
    source: str = "builtin"
    class_counts: tuple[int, ...] = ()  # training samples per label (the test split's are not counted)
    class_names: tuple[str, ...] = ()  # label i is class_names[i], when the dataset names its classes
    storage_dtype: str = "float32"  # the inputs as the worker holds them before the split
    input_divisor: float = 1.0  # training inputs are float32(stored value) / input_divisor
    package: str = ""  # the Debian package that installs a built-in's files (empty: always available)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DatasetInfo":
        return cls(
            **{
                **data,
                "feature_shape": tuple(data["feature_shape"]),
                "class_counts": tuple(data.get("class_counts", ())),
                "class_names": tuple(data.get("class_names", ())),
            }
        )


FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: The four files of Debian's dataset-fashion-mnist, by the part of the official split they hold.
FASHION_MNIST_FILES = {
    "x": "train-images-idx3-ubyte.gz",
    "y": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}

BUILTIN = {
    info.name: info
    for info in [
        DatasetInfo(
            "digits",
            1797,
            (64,),
            10,
            "8×8 images of handwritten digits, pixels 0–16 (scikit-learn); reshape to [8, 8, 1] for a CNN",
            class_counts=(178, 182, 177, 183, 181, 182, 181, 179, 174, 180),
        ),
        DatasetInfo("iris", 150, (4,), 3, "Iris flowers, 4 measurements (scikit-learn)", class_counts=(50, 50, 50)),
        DatasetInfo("wine", 178, (13,), 3, "Wine chemistry, 13 features (scikit-learn)", class_counts=(59, 71, 48)),
        DatasetInfo(
            "breast_cancer", 569, (30,), 2, "Breast cancer diagnostics, 30 features (scikit-learn)", class_counts=(212, 357)
        ),
        DatasetInfo(
            "fashion_mnist",
            60000,
            (28, 28),
            10,
            "Zalando's Fashion-MNIST: 28×28 grey images of clothing, the official split (the 10,000 t10k "
            "images are the test set, test_fraction is ignored; validation_fraction comes out of the "
            "60,000); pixels stored as uint8 0–255, trained on as float32 / 255. Use a flatten layer "
            "after input_shape [28, 28], or dataset.reshape [784] or [28, 28, 1] for a CNN",
            n_test_samples=10000,
            class_counts=(6000,) * 10,
            class_names=FASHION_MNIST_CLASSES,
            storage_dtype="uint8",
            input_divisor=input_divisor("uint8"),
            package="dataset-fashion-mnist",
        ),
    ]
}


def data_files(name: str, settings: Settings) -> dict[str, str]:
    """The files a built-in is read from ({} for scikit-learn's, which come with the worker's Python packages)."""
    if name == "fashion_mnist":
        return {part: os.path.join(settings.fashion_mnist_dir, file) for part, file in FASHION_MNIST_FILES.items()}
    return {}


def missing_files(name: str, settings: Settings) -> list[str]:
    """A cheap ``os.path`` check: the API says whether a built-in is installed without reading it."""
    return [path for path in data_files(name, settings).values() if not os.path.isfile(path)]


def install_hint(info: DatasetInfo) -> str:
    return f"apt-get install {info.package}"


def availability(info: DatasetInfo, settings: Settings) -> dict[str, Any]:
    """``{"available": true}`` or, for a built-in whose files are absent, what to install and where it looked."""
    missing = missing_files(info.name, settings) if info.source == "builtin" else []
    if not missing:
        return {"available": True}
    return {"available": False, "install": install_hint(info), "missing_files": missing}


def lookup(session: Session, name: str, owner: str, settings: Settings) -> DatasetInfo:
    """The dataset a recipe names; RecipeError if it is unknown, or a built-in not installed here."""
    if name in BUILTIN:
        info = BUILTIN[name]
        missing = missing_files(name, settings)
        if missing:
            raise RecipeError(
                ["dataset", "name"],
                f"dataset {name!r} is not installed on this server "
                f"({len(missing)} of its files are missing under {os.path.dirname(missing[0])}); "
                f"install it with `{install_hint(info)}` (Debian's package)",
            )
        return info
    row = session.execute(select(Dataset).where(Dataset.id == name, Dataset.owner == owner)).scalar_one_or_none()
    if row is None:
        raise UnknownDataset(name)
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
    if loss == "mse" and output_units != 1:  # labels are one integer per sample, never one-hot
        raise RecipeError(
            ["model", "layers", -1, "units"],
            f"mse on class labels regresses onto the label: the output layer needs 1 unit, not {output_units}",
        )
