"""What a resumable checkpoint costs per epoch, and what the policy (``worker.checkpoint.Policy``) makes of it.

``python -m bench.checkpoint``: for a tiny model, the contract's digits recipe and a wide 4M-parameter MLP,
trains through the worker's own epoch writer (``worker.runner.JobRun``: epoch rows and checkpoints in a real
database, SQLite and PostgreSQL) twice — a checkpoint after every epoch (``max_share`` 0, the old
behaviour) and with the default policy — and reports per epoch the checkpoint's bytes and milliseconds
(capture + write + commit), how many epochs got one, and the share of the training time they took.
Writes ``bench/results/checkpoint.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from dataclasses import replace

from bench.harness import RESULTS, backend, machine
from core import admission, job_state, jobs
from core.db import Database
from core.models import JobStatus
from core.plan import JobPlan
from core.recipe import Recipe
from core.settings import ROOT, Settings
from worker import data, training
from worker.runner import JobRun

TINY = {
    "name": "iris-tiny",
    "dataset": {"name": "iris", "test_fraction": 0.2, "validation_fraction": 0.1},
    "seed": 7,
    "model": {
        "input_shape": [4],
        "layers": [
            {"type": "dense", "units": 16, "activation": "relu"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    },
    "training": {"optimizer": {"type": "adam", "learning_rate": 0.01}, "epochs": 30, "batch_size": 16},
}
WIDE = {
    "name": "digits-wide-4M",
    "dataset": {"name": "digits", "test_fraction": 0.2, "validation_fraction": 0.1},
    "seed": 1,
    "model": {
        "input_shape": [64],
        "layers": [
            {"type": "dense", "units": 2048, "activation": "relu"},
            {"type": "dense", "units": 2048, "activation": "relu"},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ],
    },
    "training": {"optimizer": {"type": "adam", "learning_rate": 0.001}, "epochs": 8, "batch_size": 64, "diagnostics": False},
}


def recipes() -> dict[str, dict]:
    contract = json.loads((ROOT / "examples" / "recipes" / "contract-digits.json").read_text())
    contract["training"]["epochs"] = 15
    return {"tiny": TINY, "contract": contract, "wide": WIDE}


def train_once(db: Database, settings: Settings, raw: dict, max_share: float, interval_s: float = 0.0) -> dict:
    recipe = Recipe.model_validate(raw)
    owner = f"bench-{uuid.uuid4().hex[:6]}"
    with db.session() as session:
        job_id = admission.create(session, recipe, owner, settings).id
    with db.session() as session:
        attempt = job_state.claim(session, job_id, "bench")
        plan = JobPlan.model_validate(jobs.get_any(session, job_id).progress["plan"])
    run = JobRun(
        db, replace(settings, checkpoint_max_share=max_share, checkpoint_interval_s=interval_s), job_id, attempt, recipe, {}
    )
    costs: list[tuple[float, int]] = []
    record = run.checkpoints.record

    def recording(started: float, size: int) -> None:  # every checkpoint's own figures, not just the last
        record(started, size)
        costs.append((run.checkpoints.last_seconds, size))

    run.checkpoints.record = recording
    ends: list[float] = []  # when each epoch's writing was done: the steady state is epoch 2 on
    on_epoch = run.on_epoch

    def timed(*args, **kwargs) -> None:
        on_epoch(*args, **kwargs)
        ends.append(time.perf_counter())

    run.on_epoch = timed
    splits = data.split(data.load(None, recipe.dataset), recipe.dataset, recipe.seed)
    outcome = training.train(recipe, splits, run, end_step=plan.pruning_end_step, pruned_layers=plan.pruned_layers)
    with db.session() as session:
        epoch_s = [row["seconds"] for row in jobs.history(session, job_id)]
        job_state.finish(session, job_id, attempt, JobStatus.SUCCEEDED, result={})
    spent = sum(seconds for seconds, _ in costs)
    steady = sum(seconds for seconds, _ in costs[1:])  # epoch 1's checkpoint is written before ends[0]
    return {
        "epochs": outcome.epochs_run,
        "checkpoints": len(costs),
        "checkpoint_bytes": costs[0][1] if costs else 0,
        "checkpoint_ms_median": round(statistics.median(s for s, _ in costs) * 1000, 1) if costs else 0,
        "epoch_ms_median": round(statistics.median(epoch_s) * 1000, 1),
        "train_seconds": round(outcome.seconds, 2),
        "checkpoint_seconds": round(spent, 3),
        "share_of_training": round(spent / outcome.seconds, 4),
        "next_checkpoint_after_s": round(run.checkpoints.spacing_s(), 2),
        "share_after_epoch_1": round(steady / (ends[-1] - ends[0]), 4),
        "epoch_wall_ms_median": round(statistics.median(b - a for a, b in zip(ends, ends[1:])) * 1000, 1),
        "params": plan.params,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--models", default="tiny,contract,wide")
    args = parser.parse_args()
    results = {
        **machine(),
        "what": "no checkpoint after epoch 1 vs one after every epoch (max_share 0, the old "
        "behaviour) vs the default policy (max_share 0.05; a state up to 256 KiB after every epoch)",
        "runs": [],
    }
    # ckpt ms: capture + write + commit, median; epoch ms: training only; wall ms: epoch to epoch, all included;
    # share: checkpoint time over the wall time from epoch 2 on ("none" writes epoch 1's only)
    print(
        f"{'backend':9}{'model':10}{'params':>10}{'policy':>8}{'ckpt bytes':>12}{'ckpt ms':>9}{'epoch ms':>10}"
        f"{'wall ms':>9}{'written':>9}{'share':>8}"
    )
    for name in args.backends.split(","):
        with backend(name) as be:
            settings = be.settings()
            db = Database(settings)
            for model in args.models.split(","):
                raw = recipes()[model]
                for label, share, interval in (
                    ("none", 0.0, 1e12),
                    ("every", 0.0, 0.0),
                    ("policy", settings.checkpoint_max_share, 0.0),
                ):
                    row = {
                        "backend": name,
                        "model": model,
                        "policy": label,
                        **train_once(db, settings, raw, share, interval),
                    }
                    results["runs"].append(row)
                    print(
                        f"{name:9}{model:10}{row['params']:>10,}{label:>8}{row['checkpoint_bytes']:>12,}"
                        f"{row['checkpoint_ms_median']:>9}{row['epoch_ms_median']:>10}{row['epoch_wall_ms_median']:>9}"
                        f"{row['checkpoints']:>5}/{row['epochs']:<3}{row['share_after_epoch_1']:>8.1%}",
                        flush=True,
                    )
            db.engine.dispose()
    out = RESULTS / "checkpoint.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
