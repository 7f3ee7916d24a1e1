"""Data-parallel training (MirroredStrategy) for real, on two logical CPU devices, and the XLA option.

Logical devices must be configured before TensorFlow initialises its devices, so the run happens in a
fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys

from core.settings import ROOT

SCRIPT = r"""
import json, sys
from worker.tf_env import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from core.datasets import BUILTIN
from core.plan import plan_for
from core.recipe import Recipe
from core.selection import describe
from worker import data, export, training
from tests.support import small_recipe

out = {}
for mode in ("none", "mirrored"):
    recipe = Recipe.model_validate(small_recipe(**{"training.distribution": mode, "training.epochs": 8}))
    splits = data.split(data.load(None, recipe.dataset), recipe.dataset, recipe.seed)
    end = plan_for(recipe, describe(BUILTIN["iris"], recipe.dataset)).pruning_end_step
    outcome = training.train(recipe, splits, training.Silent(), end_step=end)
    report = export.sparsity_report(outcome.model, outcome.pruned_layers)
    out[mode] = {"accuracy": outcome.test["accuracy"], "loss": outcome.test["loss"],
                 "sparsity": report["sparsity"]["overall"], "devices": len(tf.config.list_logical_devices("CPU"))}
recipe = Recipe.model_validate(small_recipe(**{"training.jit_compile": True, "training.epochs": 2}))
splits = data.split(data.load(None, recipe.dataset), recipe.dataset, recipe.seed)
end = plan_for(recipe, describe(BUILTIN["iris"], recipe.dataset)).pruning_end_step
out["jit"] = training.train(recipe, splits, training.Silent(), end_step=end).test
print("RESULT=" + json.dumps(out))
"""


def test_mirrored_over_two_logical_cpus_matches_single_device_training():
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT=")[1])
    single, mirrored = result["none"], result["mirrored"]
    assert mirrored["devices"] == 2
    assert mirrored["sparsity"] == single["sparsity"] == 0.5  # the schedule's target, both ways
    assert abs(mirrored["loss"] - single["loss"]) < 0.1
    assert abs(mirrored["accuracy"] - single["accuracy"]) <= 0.1
    assert 0 <= result["jit"]["accuracy"] <= 1
