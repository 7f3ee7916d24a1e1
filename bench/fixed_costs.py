"""What a Fashion-MNIST job pays once, whatever its epochs: read, build, trace, checkpoint, evaluate, export, store.

``python -m bench.fixed_costs`` (issue 12, item 9): for the seed's MLP pruned to 90 % (``bench.overhead.
FASHION_MLP``) and the gallery's CNN pruned to 80 % (``examples/recipes/fashion-mnist-cnn-pruned.json``), each
step the worker takes once per job is timed through the worker's own code (``worker.data``, ``builder``,
``pruning``, ``checkpoint``, ``export``, ``plots``, ``core.artifacts``), median of ``--repeats``, with the
checkpoint and artifact writes into a real embedded SQLite database and a real PostgreSQL one. Each row says
what bounds it (and the measured rate where one applies). Writes ``bench/results/fixed-costs.json``.
The model exported is the stripped network with 90 % (80 %) of each kernel's smallest weights zeroed, as a
pruned job's is; its sizes are what sparsity makes of them.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.harness import backend, machine, table, write
from core import admission, artifacts, checkpoints, job_state
from core.datasets import BUILTIN, FASHION_MNIST_FILES, data_files
from core.db import Database
from core.models import JobStatus
from core.plan import plan_for
from core.recipe import ExportSpec, Recipe, TFLiteOptions
from core.selection import describe
from core.settings import ROOT, load_settings
from worker import builder, checkpoint, data, export, plots, pruning
from worker.data import to_dataset
from worker.tf_env import keras

TFLITE = {
    "tflite float": TFLiteOptions(sparsity=False, dynamic_range_int8=False),
    "tflite sparse": TFLiteOptions(sparsity=True, dynamic_range_int8=False),
    "tflite int8": TFLiteOptions(sparsity=False, dynamic_range_int8=True),
    "tflite sparse + int8": TFLiteOptions(sparsity=True, dynamic_range_int8=True),
}


def timed(fn, repeats: int):
    """(median seconds, last result)."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def recipes() -> dict[str, Recipe]:
    from bench.overhead import FASHION_MLP

    cnn = json.loads((ROOT / "examples" / "recipes" / "fashion-mnist-cnn-pruned.json").read_text())
    return {"mlp": Recipe.model_validate(FASHION_MLP), "cnn": Recipe.model_validate(cnn)}


def built(recipe: Recipe, end_step: int):
    model = builder.build_model(recipe)
    model, names = pruning.apply(model, recipe, end_step, recipe.pruned_layer_names())
    model.compile(builder.build_optimizer(recipe), recipe.training.loss, list(recipe.training.metrics))
    return model, names


def measure(label: str, recipe: Recipe, repeats: int, dbs: dict) -> dict:
    rows: dict[str, dict] = {}

    def row(name: str, seconds: float, bound: str, **extra) -> None:
        rows[name] = {"ms": round(seconds * 1000, 1), "bound": bound, **extra}

    settings = load_settings()
    paths = data_files("fashion_mnist", settings)
    packed = sum(Path(paths[p]).stat().st_size for p in FASHION_MNIST_FILES)
    inflate_s, raw = timed(lambda: [gzip.decompress(Path(paths[p]).read_bytes()) for p in FASHION_MNIST_FILES], repeats)
    unpacked = sum(len(r) for r in raw)
    read_s, arrays = timed(lambda: data.load(None, recipe.dataset), repeats)
    row(
        "dataset read (4 IDX .gz → uint8)",
        read_s,
        f"zlib inflate: {packed / 1e6:.0f} MB .gz → {unpacked / 1e6:.0f} MB; gzip.decompress alone "
        f"{inflate_s * 1000:.0f} ms ({unpacked / 1e6 / inflate_s:.0f} MB/s)",
    )
    split_s, splits = timed(lambda: data.split(arrays, recipe.dataset, recipe.seed), repeats)
    widened = sum(a.nbytes for a in (splits.x_train, splits.x_val, splits.x_test) if a is not None)
    row(
        "split (seeded permutation, uint8 → float32 / 255)",
        split_s,
        f"memory bandwidth: a shuffled gather + {widened / 1e6:.0f} MB of float32 written",
    )
    end_step = plan_for(recipe, describe(BUILTIN["fashion_mnist"], recipe.dataset)).pruning_end_step
    keras.utils.set_random_seed(recipe.seed)
    build_s, (model, names) = timed(lambda: built(recipe, end_step), repeats)
    params = builder.build_model(recipe).count_params()  # the recipe's; the wrapped model also counts masks
    row(
        "model build (layers + TF-MOT wrappers + compile)",
        build_s,
        f"Python: Keras layer objects and TF-MOT's clone_model; not the {params:,} parameters",
    )
    small = to_dataset(splits.x_train[:256], splits.y_train[:256], recipe.training.batch_size, recipe.seed)

    def first_fit():
        fresh, _ = built(recipe, end_step)
        started = time.perf_counter()
        fresh.fit(small.take(1), epochs=1, verbose=0, callbacks=pruning.callbacks())
        first = time.perf_counter() - started
        started = time.perf_counter()
        fresh.fit(small.take(1), epochs=1, verbose=0, callbacks=pruning.callbacks())
        return first - (time.perf_counter() - started), fresh

    traces = [first_fit() for _ in range(repeats)]
    model = traces[-1][1]
    row(
        "graph tracing (first fit call − second)",
        statistics.median(t for t, _ in traces),
        "tf.function tracing + Grappler of the train step (pruning masks included); once per job per compile",
    )
    state_s, state = timed(lambda: checkpoint.capture(model, 1), repeats)
    row(
        "checkpoint capture (weights + masks + optimizer → npz)",
        state_s,
        f"copying {len(state) / 1e6:.1f} MB of variables into np.savez (memory bandwidth)",
        bytes=len(state),
    )
    for name, (db, job_id) in dbs.items():
        chunk = db.settings.artifact_chunk_bytes

        def save(db=db, job_id=job_id, chunk=chunk):
            with db.session() as session:
                checkpoints.save(session, job_id, state, chunk)

        write_s, _ = timed(save, repeats)
        row(
            f"checkpoint write + commit, {name}",
            write_s,
            f"{len(state) / 1e6:.1f} MB in {chunk // 2**20} MiB chunks: sha256 + INSERT + commit "
            f"({len(state) / 1e6 / write_s:.0f} MB/s)",
        )

        def read_back(db=db, job_id=job_id):
            with db.session() as session:
                stored = checkpoints.find(session, job_id)
            parsed = checkpoint.parse(artifacts.read_all(db, stored))
            checkpoint.restore(model, parsed)

        read_s, _ = timed(read_back, repeats)
        row(
            f"checkpoint read + restore, {name}",
            read_s,
            f"SELECT of the chunks + sha256 check + npz parse + assign ({len(state) / 1e6 / read_s:.0f} MB/s)",
        )
    final = pruning.strip(model)
    pruning.threshold_after_training(final, names, recipe.pruning.schedule.final_sparsity)
    final.compile(optimizer="sgd", loss=recipe.training.loss, metrics=list(recipe.training.metrics))
    test = to_dataset(splits.x_test, splits.y_test, recipe.training.batch_size, None)
    eval_s, _ = timed(lambda: final.evaluate(test, verbose=0), repeats)
    row(
        f"test evaluation ({len(splits.x_test):,} images)",
        eval_s,
        "forward passes over the test set at the recipe's batch size (compute)",
    )
    strip_s, _ = timed(lambda: pruning.strip(model), repeats)
    row("strip_pruning", strip_s, "Python: TF-MOT clones the model without its wrappers")
    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fixed-") as tmp:
        tmp = Path(tmp)
        for fmt in ("h5", "keras", "savedmodel"):
            spec, directory = ExportSpec(formats=[fmt]), tmp / fmt
            directory.mkdir()
            seconds, out = timed(
                lambda spec=spec, directory=directory: export.strip_and_export(final, spec, directory), repeats
            )
            files[fmt] = out[fmt]
            size = out[fmt].stat().st_size
            bound = {
                "h5": "h5py writes of each weight (small file: call overhead, not bytes)",
                "keras": "zip of config JSON + an h5 of the weights",
                "savedmodel": "tracing every call signature into a graph, then the zip",
            }[fmt]
            row(f"export {fmt}", seconds, f"{bound}; {size / 1e6:.2f} MB", bytes=size)
        for name, options in TFLITE.items():
            seconds, blob = timed(lambda options=options: export.tflite_bytes(export.portable(final), options), 1)
            path = tmp / f"{name.replace(' ', '_').replace('+', 'and')}.tflite"
            path.write_bytes(blob)
            files[name] = path
            bound = "SavedModel trace + MLIR conversion"
            if options.dynamic_range_int8:
                bound += " + int8 quantization of each kernel"
            if options.sparsity:
                bound += " + sparse (block) encoding of each kernel"
            row(f"export {name}", seconds, f"{bound}; {len(blob) / 1e6:.3f} MB", bytes=len(blob))
        sizes_s, _ = timed(lambda: export.sizes({"h5": files["h5"]}), repeats)
        row(
            "sizes: gzip -9 of the h5 (for the report)",
            sizes_s,
            f"zlib deflate level 9 of {files['h5'].stat().st_size / 1e6:.2f} MB",
        )
        report_s, report = timed(lambda: export.sparsity_report(final, names), repeats)
        row("sparsity report (read back from the weights)", report_s, "numpy count_nonzero over the kernels")
        history = [
            {
                "epoch": e,
                "phase": "train",
                "loss": 1 / e,
                "accuracy": 1 - 1 / (e + 1),
                "val_loss": 1 / e,
                "val_accuracy": 1 - 1 / (e + 2),
                "sparsity": min(0.9, e / 10),
            }
            for e in range(1, 11)
        ]
        kernels = [layer.kernel.numpy() for layer in final.layers if getattr(layer, "kernel", None) is not None]
        steps = plan_for(recipe, describe(BUILTIN["fashion_mnist"], recipe.dataset)).steps_per_epoch
        plots_s, pngs = timed(lambda: plots.render(history, recipe, report, steps, end_step, kernels, kernels), repeats)
        row(
            "plots (4 PNGs, matplotlib Agg)",
            plots_s,
            f"matplotlib rendering; the weights histogram bins {sum(k.size for k in kernels):,} weights twice",
        )
        h5 = files["h5"].read_bytes()
        for name, (db, job_id) in dbs.items():

            def store(db=db, job_id=job_id):
                with db.session() as session:
                    artifacts.store(
                        session,
                        io.BytesIO(h5),
                        kind="model",
                        format="h5",
                        filename="bench.h5",
                        chunk_bytes=db.settings.artifact_chunk_bytes,
                        job_id=job_id,
                    )
                    for png_name, png in pngs.items():
                        artifacts.store(
                            session,
                            io.BytesIO(png),
                            kind="plot",
                            format="png",
                            filename=f"{png_name}.png",
                            chunk_bytes=db.settings.artifact_chunk_bytes,
                            job_id=job_id,
                        )

            store_s, _ = timed(store, repeats)
            total = len(h5) + sum(len(p) for p in pngs.values())
            row(
                f"artifact store (h5 + 4 PNGs) + commit, {name}",
                store_s,
                f"{total / 1e6:.2f} MB: sha256 + INSERT + commit ({total / 1e6 / store_s:.0f} MB/s)",
            )
    return {
        "recipe": recipe.name,
        "params": params,
        "train_samples": len(splits.x_train),
        "checkpoint_bytes": len(state),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="mlp,cnn")
    args = parser.parse_args()
    results = {**machine(), "repeats": args.repeats, "models": {}}
    with backend("sqlite") as sqlite, backend("postgres") as postgres:
        dbs = {}
        for name, be in (("SQLite", sqlite), ("PostgreSQL", postgres)):
            settings = be.settings()
            db = Database(settings)
            dbs[name] = (db, settings)
        for label in args.models.split(","):
            recipe = recipes()[label]
            jobs_here = {}
            for name, (db, settings) in dbs.items():
                with db.session() as session:
                    job_id = admission.create(session, recipe, f"bench-{uuid.uuid4().hex[:6]}", settings).id
                with db.session() as session:
                    attempt = job_state.claim(session, job_id, "bench")
                jobs_here[name] = (db, job_id, attempt)
            results["models"][label] = measure(
                label, recipe, args.repeats, {n: (db, j) for n, (db, j, _) in jobs_here.items()}
            )
            for db, job_id, attempt in jobs_here.values():
                with db.session() as session:
                    job_state.finish(session, job_id, attempt, JobStatus.SUCCEEDED, result={})
            m = results["models"][label]
            table(
                f"{label}: {m['recipe']} ({m['params']:,} parameters, {m['train_samples']:,} training images)",
                ["step", "ms", "bounded by"],
                [[k, v["ms"], v["bound"]] for k, v in m["rows"].items()],
            )
        for db, _ in dbs.values():
            db.engine.dispose()
    results["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"written to {write('fixed-costs', results).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
