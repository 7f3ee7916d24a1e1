"""Admission's training-memory estimate (``core.footprint``) against TensorFlow's measured peak.

``python -m bench.footprint``: each case trains in a fresh subprocess (``--one NAME``) through the worker's
own path (``worker.data`` + ``worker.training.train``, diagnostics and final evaluation included) for at
most 2 epochs at the recipe's batch size. Measured = the process's peak RSS (VmHWM) minus its RSS once
TensorFlow, tf_keras, TF-MOT and scikit-learn are imported, the state a worker's parent forks its job child
from; VmHWM is reset there through ``/proc/self/clear_refs`` so the peak is the job's own. So both sides
include the dataset as loaded and the runtime's cost of a first fit, and exclude the imported libraries.
RSS and not tracemalloc (which sees Python allocations, not TensorFlow's C++ allocator) nor
``tf.config.experimental.get_memory_info`` (not kept for CPU devices).

Cases: gallery recipes (``examples/recipes``) as they are, where the 64 MiB runtime constant dominates all but
Fashion-MNIST (its dataset does), then larger ones where activations and data dominate: a gallery CNN at
batch 1024, a wide dense layer on the last axis of a reshaped image (the issue's bomb, scaled to fit), an MLP
and a CNN on synthetic 784-feature sets. Writes ``bench/results/footprint.json`` and prints the table quoted in README.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from core.settings import ROOT

RECIPES = ROOT / "examples" / "recipes"
GALLERY = [
    "contract-digits",
    "cnn-digits-pruned",
    "optimizer-adam",
    "optimizer-momentum",
    "activation-prelu",
    "activation-selu-done-right",
    "batch-norm-before-activation",
    "sparse-2-by-4",
    "fashion-mnist-mlp",
]
MAX_EPOCHS = 2


def _gallery(name: str, **training) -> dict:
    recipe = json.loads((RECIPES / f"{name}.json").read_text())
    recipe["training"] = {**recipe.get("training", {}), **training}
    return recipe


def _synthetic_recipe(name: str, layers: list, batch_size: int, reshape: list | None = None) -> dict:
    dataset = {"name": name, "test_fraction": 0.2, "validation_fraction": 0.1}
    if reshape:
        dataset["reshape"] = reshape
    return {
        "name": name,
        "dataset": dataset,
        "model": {"input_shape": reshape or [784], "layers": layers},
        "training": {"optimizer": {"type": "adam"}, "epochs": 1, "batch_size": batch_size},
    }


#: name → (recipe, synthetic dataset (samples, features, classes) or None for the recipe's built-in)
CASES: dict[str, tuple[dict, tuple[int, int, int] | None]] = {
    **{name: (_gallery(name), None) for name in GALLERY},
    "cnn-digits-pruned @ batch 1024": (
        {
            **_gallery("cnn-digits-pruned", batch_size=1024),  # 2 steps an epoch
            "pruning": {"schedule": {"type": "polynomial_decay", "final_sparsity": 0.6, "frequency": 1}},
        },
        None,
    ),
    "wide dense on image (digits, 2048 units)": (
        {
            "name": "wide-dense-on-image",
            "dataset": {"name": "digits"},
            "model": {
                "input_shape": [64],
                "layers": [
                    {"type": "reshape", "target_shape": [8, 8, 1]},
                    {"type": "dense", "units": 2048, "activation": "relu"},
                    {"type": "global_average_pooling2d"},
                    {"type": "dense", "units": 10, "activation": "softmax"},
                ],
            },
            "training": {"optimizer": {"type": "adam"}, "epochs": 2, "batch_size": 1024},
        },
        None,
    ),
    "MLP on synthetic 12000×784": (
        _synthetic_recipe(
            "synthetic-mlp",
            [
                {"type": "dense", "units": 512, "activation": "relu"},
                {"type": "dropout", "rate": 0.2},
                {"type": "dense", "units": 256, "activation": "relu"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
            128,
        ),
        (12000, 784, 10),
    ),
    "CNN on synthetic 3000×28×28": (
        _synthetic_recipe(
            "synthetic-cnn",
            [
                {"type": "conv2d", "filters": 32, "padding": "same", "activation": "relu"},
                {"type": "max_pooling2d"},
                {"type": "conv2d", "filters": 64, "padding": "same", "activation": "relu"},
                {"type": "global_average_pooling2d"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
            512,
            reshape=[28, 28, 1],
        ),
        (3000, 784, 10),
    ),
}


def _capped(recipe_json: dict) -> dict:
    training = recipe_json.get("training", {})
    return {**recipe_json, "training": {**training, "epochs": min(training.get("epochs", 10), MAX_EPOCHS)}}


def estimate(name: str):
    """The admission estimate, exactly as ``core.admission.check`` computes it (without a database)."""
    from core import footprint
    from core.datasets import BUILTIN, DatasetInfo
    from core.plan import plan_for
    from core.recipe import Recipe
    from core.selection import describe

    recipe_json, synthetic = CASES[name]
    recipe = Recipe.model_validate(_capped(recipe_json))
    if synthetic:
        n, features, classes = synthetic
        raw = DatasetInfo(recipe.dataset.name, n, (features,), classes, source="upload")
    else:
        raw = BUILTIN[recipe.dataset.name]
    info = describe(raw, recipe.dataset)
    sizes = plan_for(recipe, info)
    return footprint.estimate(recipe, info, sizes, recipe.model.param_count()), sizes


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure_here(name: str) -> dict:
    """In this (fresh) process: RSS with the libraries imported, then the peak while the case trains."""
    import numpy as np
    import sklearn.datasets  # noqa: F401  (imported by the worker before any job; not the job's cost)

    from core import uploads
    from core.recipe import Recipe
    from worker import data, training

    recipe_json, synthetic = CASES[name]
    recipe = Recipe.model_validate(_capped(recipe_json))
    _, sizes = estimate(name)
    baseline = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS now (Linux ≥ 4.0)
    if synthetic:
        n, features, classes = synthetic
        rng = np.random.default_rng(0)
        arrays = uploads.Arrays(rng.random((n, features), dtype=np.float32), rng.integers(0, classes, n))
    else:
        arrays = data.load(None, recipe.dataset)
    splits = data.split(arrays, recipe.dataset, recipe.seed)
    loaded = _status_kb("VmRSS")
    outcome = training.train(recipe, splits, training.Silent(), end_step=sizes.pruning_end_step)
    return {
        "baseline_kb": baseline,
        "data_loaded_kb": loaded,
        "peak_kb": _status_kb("VmHWM"),
        "epochs_run": outcome.epochs_run,
    }


def run_case(name: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.footprint", "--one", name], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"{name}: {out.stderr[-2000:]}")
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    fp, sizes = estimate(name)
    peak = (measured["peak_kb"] - measured["baseline_kb"]) * 1024
    return {
        "case": name,
        "batch_size": CASES[name][0]["training"].get("batch_size", 32),
        "rows": fp.rows,
        "train_samples": sizes.train_samples,
        "epochs_run": measured["epochs_run"],
        "estimate_bytes": fp.total_bytes,
        "measured_peak_bytes": peak,
        "ratio": round(fp.total_bytes / peak, 2),
        "estimate_parts": {
            "weights": fp.weights_bytes,
            "pruning": fp.pruning_bytes,
            "activations": fp.activation_bytes,
            "dataset": fp.dataset_bytes,
            "runtime": fp.runtime_bytes,
        },
        "largest_layer": fp.largest.name,
        "rss_with_libraries_mb": round(measured["baseline_kb"] / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", help="measure one case in this process and print it as JSON")
    parser.add_argument("--only", nargs="*", help="run only these cases; the others' rows are kept from the last run")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_here(args.one)))
        return
    from bench import harness as h

    results = {**h.machine(), "method": "peak VmHWM − VmRSS after imports, fresh process per case, ≤ 2 epochs", "cases": []}
    previous = h.RESULTS / "footprint.json"
    kept = {row["case"]: row for row in json.loads(previous.read_text())["cases"]} if args.only and previous.exists() else {}
    for name in CASES:
        if args.only and name not in args.only:
            if name in kept:
                results["cases"].append(kept[name])
            continue
        row = run_case(name)
        results["cases"].append(row)
        print(
            f"{name}: estimate {row['estimate_bytes'] / 2**20:.0f} MiB, measured {row['measured_peak_bytes'] / 2**20:.0f}"
            f" MiB, ratio {row['ratio']}",
            flush=True,
        )
    within = all(0.5 <= row["ratio"] <= 2 for row in results["cases"])
    results["all_within_2x"] = within
    out = h.write("footprint", results)
    h.table(
        "admission estimate vs measured peak (MiB)",
        ["case", "batch", "estimate", "measured", "estimate/measured", "largest layer"],
        [
            [
                r["case"],
                r["batch_size"],
                round(r["estimate_bytes"] / 2**20),
                round(r["measured_peak_bytes"] / 2**20),
                r["ratio"],
                r["largest_layer"],
            ]
            for r in results["cases"]
        ],
    )
    print(f"\nall within 2× either way: {within}; written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
