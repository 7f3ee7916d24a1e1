"""Training throughput: the worker's training loop vs a bare ``model.fit`` on the same in-memory arrays.

The worker's loop adds tf.data (cached, shuffled, prefetched), its per-batch stop/NaN callback, per-epoch
sparsity, diagnostics on a probe batch and epoch records. ``python -m bench.throughput`` writes
``bench/results/throughput.json``; no GPU here, so XLA and mixed precision are measured on the CPU only
(mixed precision is not applied without a GPU).

``--fashion`` (issue 12, item 8): the seed's MLP 300-100 pruned to 90 % on Fashion-MNIST's 55,000 training
images, and the gallery's CNN (two conv + pool blocks, dense head, pruned to 80 %) on the first 10,000 of them
(a CPU budget), each trained three ways, alternated ``--repeats`` times: a bare ``model.fit`` on the arrays;
the worker's loop with hooks that do nothing (``training.Silent``); and the worker's loop as a job runs it
(``worker.runner.JobRun`` on an embedded SQLite database: epoch rows, the default checkpoint policy,
diagnostics, the heartbeat thread). Samples/s come from the wall time between epoch ends from epoch 2 on
(tracing and the first epoch's warm-up left out) and, separately, from the whole call (build + fit +
evaluate). Each per-epoch duty is timed where it runs. Writes ``bench/results/throughput-fashion.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import uuid
from dataclasses import replace

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
    model.fit(
        splits.x_train,
        splits.y_train,
        batch_size=recipe.training.batch_size,
        epochs=EPOCHS,
        validation_data=(splits.x_val, splits.y_val),
        callbacks=callbacks,
        verbose=0,
    )
    model.evaluate(splits.x_test, splits.y_test, verbose=0)
    return time.perf_counter() - started


def digits_main() -> None:
    results = {"machine": f"{platform.machine()}, {tf.config.list_physical_devices()}", "epochs": EPOCHS, "repeats": REPEATS}
    base = recipe_for(False)
    splits = data.split(data.load(None, base.dataset), base.dataset, base.seed)
    samples = len(splits.x_train) * EPOCHS
    for label, recipe in {
        "dense": base,
        "pruned": recipe_for(True),
        "pruned_xla": recipe_for(True, jit_compile=True),
    }.items():
        worker = statistics.median(worker_loop(recipe, splits) for _ in range(REPEATS))
        bare = statistics.median(bare_fit(recipe, splits) for _ in range(REPEATS))
        results[label] = {
            "worker_samples_per_s": round(samples / worker),
            "bare_fit_samples_per_s": round(samples / bare),
            "ratio_worker_over_bare": round(bare / worker, 3),
        }
    out = ROOT / "bench" / "results" / "throughput.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


class _EpochEnds(keras.callbacks.Callback):
    """When each epoch ended (after validation and every other callback of that epoch)."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


def _rates(n: int, ends: list[float], whole_s: float) -> dict:
    steady = statistics.median(b - a for a, b in zip(ends, ends[1:]))
    return {"epoch_s": round(steady, 3), "samples_per_s": round(n / steady), "whole_s": round(whole_s, 2)}


def fashion_bare(recipe: Recipe, splits, end_step: int | None) -> dict:
    keras.utils.set_random_seed(recipe.seed)
    started = time.perf_counter()
    model = builder.build_model(recipe)
    callbacks = []
    if recipe.pruning:
        model, _ = pruning.apply(model, recipe, end_step, recipe.pruned_layer_names())
        callbacks = pruning.callbacks()
    ends = _EpochEnds()
    model.compile(builder.build_optimizer(recipe), recipe.training.loss, list(recipe.training.metrics))
    model.fit(
        splits.x_train,
        splits.y_train,
        batch_size=recipe.training.batch_size,
        epochs=recipe.training.epochs,
        validation_data=(splits.x_val, splits.y_val),
        callbacks=[*callbacks, ends],
        verbose=0,
    )
    model.evaluate(splits.x_test, splits.y_test, verbose=0)
    return _rates(len(splits.x_train), ends.ends, time.perf_counter() - started)


class _TimedProbe(training.Probe):
    spent: list[float] = []

    def measure(self):
        started = time.perf_counter()
        try:
            return super().measure()
        finally:
            _TimedProbe.spent.append(time.perf_counter() - started)


def fashion_worker(recipe: Recipe, splits, end_step: int | None, db=None, settings=None) -> dict:
    """The worker's loop; with ``db``, through a real ``JobRun`` (heartbeat thread included) whose duties are timed."""
    from core import admission, job_state, jobs
    from core.models import JobStatus
    from worker.runner import JobRun

    training.Probe, _TimedProbe.spent = _TimedProbe, []
    hooks, job_id, attempt = training.Silent(), None, None
    writes: list[float] = []
    checkpoints: list[tuple[float, int]] = []
    ends: list[float] = []
    if db is not None:
        with db.session() as session:
            job_id = admission.create(session, recipe, f"bench-{uuid.uuid4().hex[:6]}", settings).id
        with db.session() as session:
            attempt = job_state.claim(session, job_id, "bench")
        hooks = JobRun(db, settings, job_id, attempt, recipe, {})
        write, record = hooks._write_epochs, hooks.checkpoints.record

        def timed_write(state=None):
            t = time.perf_counter()
            write(state)
            writes.append(time.perf_counter() - t)

        def recording(started: float, size: int) -> None:
            record(started, size)
            checkpoints.append((hooks.checkpoints.last_seconds, size))

        hooks._write_epochs, hooks.checkpoints.record = timed_write, recording
        hooks.start()
    on_epoch = hooks.on_epoch

    def ended(*args, **kwargs):
        on_epoch(*args, **kwargs)
        ends.append(time.perf_counter())

    hooks.on_epoch = ended
    started = time.perf_counter()
    try:
        training.train(recipe, splits, hooks, end_step=end_step)
    finally:
        whole = time.perf_counter() - started
        if db is not None:
            hooks.stop()
    out = _rates(len(splits.x_train), ends, whole)
    out["diagnostics_ms"] = round(statistics.median(_TimedProbe.spent) * 1000, 1) if _TimedProbe.spent else None
    if db is not None:
        beats = []
        for _ in range(20):  # the heartbeat thread's work, timed here on the same job row
            t = time.perf_counter()
            with db.session() as session:
                job_state.heartbeat(session, job_id, attempt)
                jobs.append_logs(session, job_id, [])
            beats.append(time.perf_counter() - t)
        with db.session() as session:
            job_state.finish(session, job_id, attempt, JobStatus.SUCCEEDED, result={})
        ckpt_s = sum(s for s, _ in checkpoints)
        writes_s = [max(0.0, w) for w in writes]
        out.update(
            {
                # the epoch row (+ log lines) and, when due, the checkpoint: one transaction per epoch
                "epoch_write_ms": round(statistics.median(writes_s) * 1000, 1),
                "history_write_ms": round((sum(writes_s) - ckpt_s) / len(writes_s) * 1000, 1),
                "checkpoints": f"{len(checkpoints)} of {len(writes_s)}",
                "checkpoint_ms": round(statistics.median(s for s, _ in checkpoints) * 1000, 1) if checkpoints else 0,
                "checkpoint_ms_per_epoch": round(ckpt_s / len(writes_s) * 1000, 1),
                "checkpoint_bytes": checkpoints[0][1] if checkpoints else 0,
                "heartbeat_ms": round(statistics.median(beats) * 1000, 2),
                "heartbeats_per_epoch": round(out["epoch_s"] / settings.heartbeat_interval_s, 2),
            }
        )
    return out


def fashion_recipes(mlp_epochs: int, cnn_epochs: int, cnn_limit: int) -> dict[str, Recipe]:
    from bench.overhead import FASHION_MLP

    mlp = json.loads(json.dumps(FASHION_MLP))
    mlp["training"]["epochs"] = mlp_epochs
    cnn = json.loads((ROOT / "examples" / "recipes" / "fashion-mnist-cnn-pruned.json").read_text())
    cnn["training"]["epochs"] = cnn_epochs
    cnn["dataset"]["limit"] = cnn_limit
    return {"mlp": Recipe.model_validate(mlp), "cnn": Recipe.model_validate(cnn)}


def fashion_main(args) -> None:
    import os

    from bench.harness import backend, machine
    from core.db import Database

    results = {**machine(), "devices": str(tf.config.list_physical_devices()), "repeats": args.repeats, "models": {}}
    with backend("sqlite") as be:
        settings = be.settings()
        db = Database(settings)
        for label, recipe in fashion_recipes(args.mlp_epochs, args.cnn_epochs, args.cnn_limit).items():
            if label not in args.models.split(","):
                continue
            splits = data.split(data.load(None, recipe.dataset), recipe.dataset, recipe.seed)
            info = describe(BUILTIN["fashion_mnist"], recipe.dataset)
            end = plan_for(recipe, info).pruning_end_step
            runs = {"bare_fit": [], "worker_silent": [], "worker_job": []}
            for _ in range(args.repeats):  # alternated, so all three see the same load
                runs["bare_fit"].append(fashion_bare(recipe, splits, end))
                runs["worker_silent"].append(fashion_worker(recipe, splits, end))
                runs["worker_job"].append(fashion_worker(recipe, splits, end, db, replace(settings)))
                print(label, {k: v[-1] for k, v in runs.items()}, flush=True)
            ratios = {
                k: [round(w["samples_per_s"] / b["samples_per_s"], 3) for w, b in zip(runs[k], runs["bare_fit"])]
                for k in ("worker_silent", "worker_job")
            }
            whole = {
                k: [round(b["whole_s"] / w["whole_s"], 3) for w, b in zip(runs[k], runs["bare_fit"])]
                for k in ("worker_silent", "worker_job")
            }
            job = runs["worker_job"]
            epoch_s = statistics.median(r["epoch_s"] for r in job)
            duties = {}
            for duty, key in (
                ("history write", "history_write_ms"),
                ("checkpoint", "checkpoint_ms_per_epoch"),
                ("diagnostics", "diagnostics_ms"),
            ):
                ms = statistics.median(r[key] for r in job)
                duties[duty] = {"ms_per_epoch": round(ms, 1), "share_of_epoch": round(ms / 1000 / epoch_s, 4)}
            beat = statistics.median(r["heartbeat_ms"] * r["heartbeats_per_epoch"] for r in job)
            duties["heartbeat"] = {
                "ms_per_epoch": round(beat, 1),
                "share_of_epoch": round(beat / 1000 / epoch_s, 4),
                "ms_per_beat": statistics.median(r["heartbeat_ms"] for r in job),
                "interval_s": settings.heartbeat_interval_s,
            }
            results["models"][label] = {
                "recipe": recipe.name,
                "train_samples": len(splits.x_train),
                "epochs": recipe.training.epochs,
                "batch_size": recipe.training.batch_size,
                "runs": runs,
                "ratio_steady": {
                    k: {"median": statistics.median(v), "min": min(v), "max": max(v), "all": v} for k, v in ratios.items()
                },
                "ratio_whole_call": {
                    k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in whole.items()
                },
                "checkpoint": {
                    "bytes": job[0]["checkpoint_bytes"],
                    "ms": statistics.median(r["checkpoint_ms"] for r in job),
                    "written": [r["checkpoints"] for r in job],
                },
                "duties": duties,
            }
        db.engine.dispose()
    results["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    out = ROOT / "bench" / "results" / "throughput-fashion.json"
    if out.exists():  # a re-run of one model keeps the other's figures (each carries its own date and load)
        kept = json.loads(out.read_text())
        for model in kept.get("models", {}):
            results["models"].setdefault(
                model,
                {
                    **kept["models"][model],
                    "date": kept.get("date"),
                    "load_avg_at_start": kept.get("load_avg_at_start"),
                    "code": kept.get("code"),
                },
            )
    out.write_text(json.dumps(results, indent=2) + "\n")
    for label, m in results["models"].items():
        print(f"\n{label}: {m['train_samples']} samples, {m['epochs']} epochs, batch {m['batch_size']}")
        print(f"  worker job / bare fit (steady epochs): {m['ratio_steady']['worker_job']}")
        print(f"  worker silent / bare fit:              {m['ratio_steady']['worker_silent']}")
        print(f"  whole call, job / bare:                {m['ratio_whole_call']['worker_job']}")
        for duty, d in m["duties"].items():
            print(f"  {duty:<14} {d['ms_per_epoch']:>8} ms/epoch  {d['share_of_epoch']:.2%}")
    print(f"written to {out.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fashion", action="store_true", help="Fashion-MNIST MLP and CNN (issue 12, item 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mlp-epochs", type=int, default=4)
    parser.add_argument("--cnn-epochs", type=int, default=3)
    parser.add_argument("--cnn-limit", type=int, default=10_000)
    parser.add_argument("--models", default="mlp,cnn", help="with --fashion: which of mlp,cnn to run")
    args = parser.parse_args()
    fashion_main(args) if args.fashion else digits_main()


if __name__ == "__main__":
    main()
