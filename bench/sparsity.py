"""What pruning buys on the contract's digits recipe: dense vs pruned accuracy, sparsity, file sizes.

``python -m bench.sparsity``: trains the contract recipe with and without its pruning (same seed), exports
h5 and tflite (float, sparse, int8, sparse+int8), and writes ``bench/results/sparsity.json``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from core.datasets import BUILTIN
from core.plan import plan_for
from core.recipe import ExportSpec, Recipe
from core.selection import describe
from core.settings import ROOT
from worker import data, export, training


def run(recipe_json: dict) -> dict:
    recipe = Recipe.model_validate(recipe_json)
    splits = data.split(data.load(None, recipe.dataset), recipe.dataset, recipe.seed)
    info = describe(BUILTIN[recipe.dataset.name], recipe.dataset)
    outcome = training.train(recipe, splits, training.Silent(), end_step=plan_for(recipe, info).pruning_end_step)
    report = export.sparsity_report(outcome.model, outcome.pruned_layers)
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, options in {
            "float": {},
            "sparse": {"sparsity": True},
            "int8": {"dynamic_range_int8": True},
            "sparse_int8": {"sparsity": True, "dynamic_range_int8": True},
        }.items():
            folder = Path(tmp) / label
            folder.mkdir()
            formats = ["h5", "tflite"] if label == "float" else ["tflite"]
            files = export.strip_and_export(outcome.model, ExportSpec(formats=formats, tflite_options=options), folder)
            for fmt, size in export.sizes(files).items():
                sizes[fmt if fmt == "h5" else f"tflite_{label}"] = size
    return {
        "test_accuracy": round(outcome.test["accuracy"], 4),
        "sparsity": report["sparsity"]["overall"],
        "params": report["params"],
        "sizes": sizes,
    }


def main() -> None:
    contract = json.loads((ROOT / "examples" / "recipes" / "contract-digits.json").read_text())
    dense = json.loads(json.dumps(contract))
    dense.pop("pruning")
    results = {
        "recipe": "examples/recipes/contract-digits.json (30 epochs, seed 42)",
        "dense": run(dense),
        "pruned": run(contract),
    }
    out = ROOT / "bench" / "results" / "sparsity.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'':28}{'dense':>12}{'pruned':>12}")
    d, p = results["dense"], results["pruned"]
    print(f"{'test accuracy':28}{d['test_accuracy']:>12}{p['test_accuracy']:>12}")
    print(f"{'kernel sparsity':28}{d['sparsity']:>12}{p['sparsity']:>12}")
    for key in ("h5", "tflite_float", "tflite_sparse", "tflite_int8", "tflite_sparse_int8"):
        print(f"{key + ' gzip bytes':28}{d['sizes'][key]['gzip_bytes']:>12}{p['sizes'][key]['gzip_bytes']:>12}")
    for key in ("h5", "tflite_float", "tflite_sparse", "tflite_int8", "tflite_sparse_int8"):
        print(f"{key + ' bytes':28}{d['sizes'][key]['bytes']:>12}{p['sizes'][key]['bytes']:>12}")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
