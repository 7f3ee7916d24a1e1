"""The seed's comparisons in examples/experiments/ stay valid experiments (the recipe schema is strict, so a
renamed field would otherwise surface only as a 422 when someone runs them), and they run the budget README
states: Fashion-MNIST, 20,000 training images, the seed's 5,000 validation images, 10 epochs, 3 seeds (2 for
L1 before pruning, the dearest: 9 pruned jobs did not fit the CPU budget)."""

from __future__ import annotations

import json

import pytest

from core.experiments import ExperimentSpec, variant_recipe
from core.recipe import Recipe
from core.settings import ROOT

EXAMPLES = sorted((ROOT / "examples" / "experiments").glob("*.json"))


def test_the_seeds_comparisons_are_all_there():
    assert {path.stem for path in EXAMPLES} == {
        "initialization",
        "activations",
        "batch-norm",
        "clipping",
        "optimizers",
        "gradual-vs-naive",
        "l1-before-pruning",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_variant_and_seed_is_a_valid_recipe_on_the_stated_budget(path):
    spec = ExperimentSpec.model_validate(json.loads(path.read_text()))
    assert spec.repeats == (2 if path.stem == "l1-before-pruning" else 3)
    Recipe.model_validate(spec.base)
    distinct = set()
    for index in range(len(spec.variants)):
        recipes = [variant_recipe(spec, index, repeat) for repeat in range(spec.repeats)]
        assert [r.seed for r in recipes] == [42, 43, 44][: spec.repeats]
        recipe = recipes[0]
        assert recipe.dataset.name == "fashion_mnist" and recipe.dataset.limit == 20_000
        assert round(60_000 * recipe.dataset.validation_fraction) == 5_000
        assert recipe.training.epochs == 10
        distinct.add(recipe.model_dump_json(exclude={"name"}))
    assert len(distinct) == len(spec.variants), "two variants train the same recipe: a row that compares nothing"


def test_the_naive_and_gradual_rows_prune_to_the_same_sparsities():
    spec = ExperimentSpec.model_validate(json.loads((ROOT / "examples/experiments/gradual-vs-naive.json").read_text()))
    targets = {}
    for index in range(len(spec.variants)):
        pruning = variant_recipe(spec, index, 0).pruning
        method = "gradual" if pruning.during_training else "naive"
        sparsity = pruning.schedule.final_sparsity if pruning.during_training else pruning.post_training_threshold
        targets.setdefault(method, []).append(sparsity)
    assert targets == {"gradual": [0.8, 0.9, 0.95], "naive": [0.8, 0.9, 0.95]}
