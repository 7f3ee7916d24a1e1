"""The seed's model-A / model-B story on Fashion-MNIST, through the API with the SDK.

    python examples/transfer/story.py [URL] [--seeds 42 43 44 45 46] [--optimizers sgd nadam] [--json out.json]
        [--model-a JOB_ID ...]   (reuse finished model-A jobs, one per seed)

For every seed: model A (``1-model-A.json``: the 8 classes other than sandal and shirt, dense SELU
300-100-50-50-50, LeCun normal, plain SGD, 20 epochs) is trained once; then, for every optimizer, model B
(shirt vs sandal, 200 labelled images, the seed's ``Dense(1, sigmoid)`` head with ``binary_crossentropy``,
20 epochs) from scratch (``2-model-B-scratch.json``) and on A's hidden layers (``3-model-B-on-A.json``: 4
epochs frozen, then unfrozen at a 10× lower rate). B is tested on the 2,000 shirt and sandal images of the
official t10k set, so one image is 0.05 points. The seed changes A's and B's initial weights, B's 200
images (the first 200 of a seeded shuffle) and the batch order.

The seed's code compiles with ``optimizer='sgd'`` in both phases (Keras's SGD at 0.01; the SGD(lr=1e-4) it
builds is never used): ``sgd`` here is SGD at 0.01, fine-tuned at 0.001. A is always trained with SGD.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from trainer_client import Client, Job

HERE = Path(__file__).parent
#: optimizer of B's first phase, and the fine-tune rate (10× lower) of B-on-A's second
OPTIMIZERS = {
    "sgd": ({"type": "sgd", "learning_rate": 0.01}, 0.001),
    "sgd-book": ({"type": "sgd", "learning_rate": 0.001}, 0.0001),  # the book's notebook: SGD(1e-3), then 1e-4
    "adam": ({"type": "adam", "learning_rate": 0.001}, 0.0001),
    "nadam": ({"type": "nadam", "learning_rate": 0.001}, 0.0001),
}


def recipe(name: str, seed: int, optimizer: str | None = None, base: str | None = None) -> dict:
    data = json.loads((HERE / f"{name}.json").read_text())
    data["seed"] = seed
    if optimizer is not None:
        data["training"]["optimizer"], fine_tune = OPTIMIZERS[optimizer]
        if "transfer" in data:
            data["transfer"]["fine_tune_learning_rate"] = fine_tune
    if base is not None:
        data["transfer"]["base_job_id"] = base
    return data


def train(client: Client, data: dict) -> Job:
    job = client.submit(data).wait(poll=0.5)
    if not job.succeeded:
        raise SystemExit(f"{data['name']} (seed {data['seed']}): {job.status} {job.error}")
    return job


def spread(values: list[float]) -> str:
    """mean ± sample standard deviation [min–max]"""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f} [{min(values):.4f}–{max(values):.4f}]"


def run(url: str, seeds: list[int], optimizers: list[str], model_a: list[str] | None = None) -> dict:
    rows = []
    started = time.perf_counter()
    with Client(url) as client:
        for i, seed in enumerate(seeds):
            a = client.job(model_a[i]) if model_a else train(client, recipe("1-model-A", seed))
            row = {"seed": seed, "model_a_job": a.id, "model_a": a.result["test"]["accuracy"]}
            for opt in optimizers:
                scratch = train(client, recipe("2-model-B-scratch", seed, opt))
                on_a = train(client, recipe("3-model-B-on-A", seed, opt, base=a.id))
                row[f"{opt}_scratch"] = scratch.result["test"]["accuracy"]
                row[f"{opt}_on_a"] = on_a.result["test"]["accuracy"]
            rows.append(row)
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), file=sys.stderr)
    summary = {"model A (8 classes), SGD": spread([r["model_a"] for r in rows])}
    for opt in optimizers:
        scratch = [r[f"{opt}_scratch"] for r in rows]
        on_a = [r[f"{opt}_on_a"] for r in rows]
        gains = [b - s for s, b in zip(scratch, on_a)]
        summary[f"B from scratch, {opt}"] = spread(scratch)
        summary[f"B on A, {opt}"] = spread(on_a)
        summary[f"B on A - B from scratch, {opt}"] = (
            f"{spread(gains)}; on A better in {sum(g > 0 for g in gains)} of {len(gains)} seeds, "
            f"worse in {sum(g < 0 for g in gains)}"
        )
    return {"seeds": seeds, "rows": rows, "summary": summary, "wall_seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8000")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46])
    parser.add_argument("--optimizers", nargs="+", choices=sorted(OPTIMIZERS), default=["sgd", "nadam"])
    parser.add_argument(
        "--model-a",
        nargs="+",
        metavar="JOB_ID",
        help="reuse these finished model-A jobs, one per seed, instead of training A again",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    if args.model_a and len(args.model_a) != len(args.seeds):
        parser.error("--model-a needs one job id per seed")
    out = run(args.url, args.seeds, args.optimizers, args.model_a)
    for label, value in out["summary"].items():
        print(f"{label:<34} {value}")
    print(f"{len(args.seeds)} seeds in {out['wall_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
