"""Every recipe in examples/recipes/ trains through the API (epochs and training samples capped so the suite
stays fast)."""

from __future__ import annotations

import json

import pytest

from core.settings import ROOT
from tests.support import wait_for

GALLERY = sorted((ROOT / "examples" / "recipes").glob("*.json"))
pytestmark = pytest.mark.worker


def test_the_gallery_covers_the_seed():
    names = {path.stem for path in GALLERY}
    for needed in (
        "vanishing-gradients-sigmoid-random-normal",
        "init-he-normal-elu",
        "activation-selu-done-right",
        "activation-leaky-relu",
        "activation-prelu",
        "activation-rrelu",
        "activation-elu",
        "batch-norm-before-activation",
        "batch-norm-after-activation",
        "clip-by-value",
        "clip-by-norm",
        "optimizer-momentum",
        "optimizer-nesterov",
        "optimizer-adagrad",
        "optimizer-rmsprop",
        "optimizer-adam",
        "optimizer-adamax",
        "optimizer-nadam",
        "sparse-l1-gradual-pruning",
        "sparse-2-by-4",
        "sparse-naive-threshold",
    ):
        assert needed in names


@pytest.mark.parametrize("path", GALLERY, ids=[p.stem for p in GALLERY])
def test_gallery_recipe_trains(http, worker, path):
    recipe = json.loads(path.read_text())
    recipe["training"]["epochs"] = min(recipe["training"]["epochs"], 2)
    recipe["dataset"]["limit"] = min(recipe["dataset"].get("limit") or 2000, 2000)  # fashion_mnist: not all 55,000
    response = http.post("/v1/jobs", json=recipe)
    assert response.status_code == 202, response.text
    done = wait_for(http, response.json()["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", (done["error"], http.get(f"/v1/jobs/{done['id']}/logs").text[-3000:])
    assert done["warnings"] == []  # every gallery recipe meets its technique's conditions
