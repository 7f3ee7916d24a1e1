"""Dense vs unstructured vs structured (shrunk) vs structured + unstructured + int8, through the API, as a table.

``python examples/structured/compare.py [URL] [--only mlp|cnn] [--jobs ID …] [--json out.json]`` submits the eight
recipes beside this file (the seed's MLP and the gallery CNN on Fashion-MNIST, four ways each) to a running
service, waits for them, and prints one Markdown table per model from each job's own ``result``: test accuracy,
parameters (non-zero), FLOPs, the deployed file's size, and the worker's measured inference (``result.inference``,
single-thread: batch-1 median latency, batch-256 throughput) for that file's format and for the Keras model.
``--jobs`` re-reads finished jobs (in the recipes' order) instead of training again. ``TRAINER_TOKEN`` is read as
the SDK reads it. The worker must measure inference (``TRAINER_INFERENCE=full``, the default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from trainer_client import Client

HERE = Path(__file__).parent
VARIANTS = ["dense", "unstructured-90", "structured-50", "structured-50-unstructured-int8"]
#: The file each variant would ship: its TFLite export, in the inference report's name for those options.
DEPLOYED = {
    "dense": "tflite_float",
    "unstructured-90": "tflite_sparse",
    "structured-50": "tflite_float",
    "structured-50-unstructured-int8": "tflite_sparse_int8",
}


def row(variant: str, job: dict) -> list[str]:
    result = job.get("result") or {}
    if job.get("status") != "succeeded":
        return [variant, job.get("status", "?"), *["–"] * 8]
    fmt = DEPLOYED[variant]
    inference = result.get("inference") or {}
    ours = inference.get("model", {})

    def latency(name: str) -> str:
        measured = ours.get(name)
        return f"{measured['single_thread']['batch1']['median_ms']:.3f}" if measured else "–"

    def throughput(name: str) -> str:
        measured = ours.get(name)
        return f"{measured['single_thread']['batch256_per_second']:,.0f}" if measured else "–"

    size = ours.get(fmt) or {}
    speedup = inference.get("speedup", {}).get(fmt)
    params = result["params"]
    flops = (result.get("flops") or {}).get("total")
    return [
        variant,
        f"{result['test']['accuracy']:.4f}",
        f"{params['total']:,} ({params['nonzero']:,})",
        f"{flops:,}" if flops is not None else "–",
        f"{fmt}: {size.get('bytes', 0):,} / {size.get('gzip_bytes', 0):,}" if size else "–",
        latency(fmt),
        throughput(fmt),
        f"{speedup:.2f}×" if speedup else "–",
        latency("keras"),
        throughput("keras"),
    ]


HEAD = [
    "variant",
    "test accuracy",
    "params (non-zero)",
    "FLOPs / sample",
    "deployed file, bytes / gzipped",
    "its batch-1 ms",
    "its batch-256 /s",
    "vs dense twin (batch 1)",
    "Keras batch-1 ms",
    "Keras batch-256 /s",
]


def table(jobs: dict[str, dict]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(row(variant, job)) + " |" for variant, job in jobs.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=None)
    parser.add_argument("--only", choices=["mlp", "cnn"], action="append")
    parser.add_argument("--jobs", nargs="+", help="finished job ids, in the order of the recipes, to re-read")
    parser.add_argument("--json", type=Path, help="also write every job's JSON here")
    args = parser.parse_args()
    models = args.only or ["mlp", "cnn"]
    names = [f"{model}-{variant}" for model in models for variant in VARIANTS]
    started, done = time.monotonic(), {}
    with Client(args.url, timeout=60) as client:
        if args.jobs:
            handles = dict(zip(names, (client.job(job_id) for job_id in args.jobs), strict=True))
        else:
            handles = {name: client.submit(HERE / f"{name}.json") for name in names}
        for name, job in handles.items():
            job.wait(poll=2)
            done[name] = job.data
            print(f"{name}: {job.status} ({job.id}) at {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    for model in models:
        print(f"#### {model}\n")
        print(table({variant: done[f"{model}-{variant}"] for variant in VARIANTS}))
        print()
    cpu = next(
        (job["result"]["inference"]["cpu"] for job in done.values() if (job.get("result") or {}).get("inference")), None
    )
    print(f"worker CPU: {cpu}; {len(done)} jobs in {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(done, indent=1))


if __name__ == "__main__":
    main()
