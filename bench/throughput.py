"""Training throughput: the worker's training loop vs a bare ``model.fit`` on the same in-memory arrays.

The worker's loop adds tf.data (cached, shuffled, prefetched), its per-batch stop/NaN callback, per-epoch
sparsity, diagnostics on a probe batch and epoch records. ``python -m bench.throughput`` writes
``bench/results/throughput.json``; no GPU here, so XLA and mixed precision are measured on the CPU only
(mixed precision is not applied without a GPU).
"""
from __future__ import annotations

import json
import platform
import statistics
import time

from core.datasets import BUILTIN
from core.plan import plan_for
from core.recipe import Recipe
from core.selection import describe
from core.settings import ROOT
from worker import builder, data, pruning, training
from worker.tf_env import keras, tf

EPOCHS, REPEATS = 20, 3




def recipe_for(pruned: bool, **training_options) -> Recipe:
    raw = json.loads((ROOT / "examples" / "recipes" / "contract-digits.json").read_text())
    raw["training"].update(epochs=EPOCHS, **training_options)
    if not pruned:
        raw.pop("pruning")
    return Recipe.model_validate(raw)


def worker_loop(recipe: Recipe, splits) -> float:
    end = plan_for(recipe, describe(BUILTIN["digits"], recipe.dataset)).pruning_end_step
    started = time.perf_counter()
    training.train(recipe, splits, training.Silent(), end_step=end)
    return time.perf_counter() - started


def bare_fit(recipe: Recipe, splits) -> float:
    keras.utils.set_random_seed(recipe.seed)
    started = time.perf_counter()
    model = builder.build_model(recipe)
    callbacks = []
    if recipe.pruning:
        end = plan_for(recipe, describe(BUILTIN["digits"], recipe.dataset)).pruning_end_step
        model, _ = pruning.apply(model, recipe, end, recipe.pruned_layer_names())
        callbacks = pruning.callbacks()
    model.compile(builder.build_optimizer(recipe), recipe.training.loss, list(recipe.training.metrics))
    model.fit(splits.x_train, splits.y_train, batch_size=recipe.training.batch_size, epochs=EPOCHS,
              validation_data=(splits.x_val, splits.y_val), callbacks=callbacks, verbose=0)
    model.evaluate(splits.x_test, splits.y_test, verbose=0)
    return time.perf_counter() - started


def main() -> None:
    results = {"machine": f"{platform.machine()}, {tf.config.list_physical_devices()}", "epochs": EPOCHS,
               "repeats": REPEATS}
    base = recipe_for(False)
    splits = data.split(data.load(None, base.dataset), base.dataset, base.seed)
    samples = len(splits.x_train) * EPOCHS
    for label, recipe in {"dense": base, "pruned": recipe_for(True),
                          "pruned_xla": recipe_for(True, jit_compile=True)}.items():
        worker = statistics.median(worker_loop(recipe, splits) for _ in range(REPEATS))
        bare = statistics.median(bare_fit(recipe, splits) for _ in range(REPEATS))
        results[label] = {"worker_samples_per_s": round(samples / worker), "bare_fit_samples_per_s": round(samples / bare),
                          "ratio_worker_over_bare": round(bare / worker, 3)}
    out = ROOT / "bench" / "results" / "throughput.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
