"""Prune a model you already have: train one by hand with plain tf_keras (no service), save it as ``.keras``,
upload it with the SDK, sweep it over target sparsities, and print what each level costs.

    python examples/byom/prune_my_model.py [URL] [--dataset fashion_mnist|digits] [--sparsity 0.5,0.7,0.8,0.9,0.95]
        [--repeats 1] [--epochs 2] [--limit 12000] [--train-epochs 3] [--out DIR]

Fashion-MNIST when Debian's dataset-fashion-mnist is installed (else digits). Kept to minutes on a 2-core CPU:
the hand-trained CNN sees 3 epochs of the 60,000 training images, and each pruning job fine-tunes for 2 epochs
on the first ``--limit`` (12,000) of its training split, then is tested on the official 10,000 test images.
The table's "dense base" is the uploaded model measured by the service on that same test split before any
training, so every row's cost of sparsity is one subtraction.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic, dimensions, then uint8 data."""
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def hand_trained(dataset: str, epochs: int, path: Path):
    """A model the service never saw: built, trained and saved with tf_keras alone."""
    import os

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    if dataset == "fashion_mnist":
        x, y = idx(FASHION / "train-images-idx3-ubyte.gz") / np.float32(255), idx(FASHION / "train-labels-idx1-ubyte.gz")
        model = keras.Sequential(
            [
                keras.Input((28, 28)),
                keras.layers.Reshape((28, 28, 1)),
                keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
                keras.layers.MaxPooling2D(),
                keras.layers.Flatten(),
                keras.layers.Dense(128, activation="relu", name="dense"),
                keras.layers.Dense(10, activation="softmax", name="output"),
            ]
        )
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data.astype(np.float32), bunch.target  # raw 0..16, as the service reads digits
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(64, activation="relu", name="dense"),
                keras.layers.Dense(10, activation="softmax", name="output"),
            ]
        )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    started = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    model.save(path)
    took = time.perf_counter() - started
    print(f"trained by hand: {model.count_params():,} parameters, {epochs} epochs in {took:.0f} s -> {path}")


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from trainer_client import Client, TrainerClientError
    from trainer_client.cli import sweep_table
    from trainer_client.sdk import base_model_recipe, sparsity_sweep

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", default=None, help="The service (default TRAINER_URL or 127.0.0.1:8000).")
    default = "fashion_mnist" if (FASHION / "train-images-idx3-ubyte.gz").exists() else "digits"
    parser.add_argument("--dataset", choices=["fashion_mnist", "digits"], default=default)
    parser.add_argument("--sparsity", default="0.5,0.7,0.8,0.9,0.95")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2, help="Fine-tuning epochs of each pruning job.")
    parser.add_argument("--limit", type=int, default=12_000, help="Training images each pruning job fine-tunes on.")
    parser.add_argument("--train-epochs", type=int, default=3, help="Epochs of the hand training.")
    parser.add_argument("--out", type=Path, default=Path("var/byom"))
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"my-{args.dataset}-model.keras"
    hand_trained(args.dataset, args.train_epochs, path)
    started = time.perf_counter()
    with Client(args.url, timeout=120) as client:
        model = client.upload_model(path)
        sha = model["sha256"][:12]
        print(f"uploaded: model {model['id']} is {model['status']} ({model['size_bytes']:,} bytes, sha256 {sha}…)")
        base = base_model_recipe(model["id"], args.dataset, args.epochs)
        base["dataset"]["limit"] = args.limit
        targets = [float(v) for v in args.sparsity.split(",")]
        experiment = client.create_experiment(sparsity_sweep(base, targets, args.repeats))
        print(f"sweep {experiment.id}: {experiment.jobs} jobs")
        seen = -1

        def progress(e) -> None:
            nonlocal seen
            if e.finished != seen:
                seen = e.finished
                print(f"  {e.finished}/{e.jobs} jobs done ({time.perf_counter() - started:.0f} s)", flush=True)

        while True:
            try:
                experiment.wait(poll=2.0, on_update=progress)
                break
            except TrainerClientError as exc:  # a dropped connection while polling: the sweep goes on, poll again
                if exc.status is not None:
                    raise
                time.sleep(2)
        Console(width=120).print(sweep_table(experiment))
        plot = args.out / "tradeoff.png"
        for _ in range(15):  # drawn by the worker that finished the last job, just after it committed
            try:
                plot.write_bytes(experiment.plot("tradeoff"))
                break
            except Exception:  # noqa: BLE001 - not drawn yet
                time.sleep(1)
        print(f"plot: {plot}; the whole run took {time.perf_counter() - started:.0f} s after the hand training")
        failed = [s for row in experiment.comparison for s in row["jobs"].values() if s != "succeeded"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
