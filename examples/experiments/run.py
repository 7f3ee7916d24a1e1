"""Run the seed's comparisons through the API (with the SDK, ``trainer_client``) and print each table as Markdown.

``python examples/experiments/run.py [URL] [name or file.json …]`` — every ``*.json`` here by default;
``TRAINER_TOKEN``
is read as the SDK reads it. Progress goes to stderr, the tables to stdout.

The server's comparison gives accuracies, epochs to the target, wall time, sparsity and size. Two figures
are added here from each child job, because the seed's arguments rest on them: the training seconds to
reach the target (the sum of the epochs' own ``seconds`` up to the first epoch at or over it, so a busy
machine's queueing and the per-job setup do not count), and the vanishing-gradient ratio — the first dense
layer's mean |gradient| over the output layer's, on the worker's epoch-1 probe batch.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from trainer_client import Client, TrainerClientError

HERE = Path(__file__).parent


def stat(values: list[float]) -> dict | None:
    """Mean and population spread over the seeds, as the server reports them."""
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "spread": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def cell(value: dict | None, digits: int = 3, style: str = "f") -> str:
    if not value:
        return "–"
    mean = f"{value['mean']:.{digits}{style}}"
    return f"{mean} ± {value['spread']:.{digits}{style}}" if value["n"] > 1 else mean


def seconds_to_target(history: list[dict], target: float) -> float | None:
    spent = 0.0
    for epoch in history:
        spent += epoch.get("seconds") or 0.0
        if (epoch.get("val_accuracy") or 0.0) >= target:
            return spent
    return None


def gradient_ratio(client: Client, job_id: str) -> float | None:
    """First dense layer's mean |gradient| / the output layer's, at epoch 1 (None without diagnostics)."""
    epochs = get(client, f"/v1/jobs/{job_id}/diagnostics").get("epochs") or []
    grads = [layer["mean_abs_grad"] for layer in (epochs[0]["layers"] if epochs else []) if layer.get("mean_abs_grad")]
    return grads[0] / grads[-1] if len(grads) > 1 else None


def job_figures(client: Client, row: dict, target: float | None) -> dict:
    """Per variant: how its jobs ended, training seconds to the target, and the epoch-1 gradient ratio."""
    ended: dict[str, int] = {}
    reach, ratios = [], []
    for job_id, status in row["jobs"].items():
        job = client.job(job_id)
        why = status if status != "failed" else (job.error or {}).get("type", "failed")
        ended[why] = ended.get(why, 0) + 1
        if status != "succeeded":
            continue
        if target is not None and (spent := seconds_to_target(job.history(), target)) is not None:
            reach.append(spent)
        if (ratio := gradient_ratio(client, job_id)) is not None:
            ratios.append(ratio)
    ok = ended.pop("succeeded", 0)
    ran = f"{ok}/{len(row['jobs'])}" + (f" ({', '.join(f'{k} ×{n}' for k, n in ended.items())})" if ended else "")
    return {"ran": ran, "seconds_to_target": stat(reach), "gradient_ratio": stat(ratios)}


def table(client: Client, experiment: dict) -> str:
    target = experiment["spec"].get("target_accuracy")
    pruned = "pruning" in experiment["spec"]["base"]
    head = ["variant", "jobs ok", "test accuracy", "best val accuracy"]
    if target:
        head += ["epochs to target (reached)", "train s to target"]
    head += ["wall s per job"] + (["sparsity", "gzip bytes (h5)"] if pruned else ["∇ first / output (epoch 1)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in experiment["comparison"]:
        extra = job_figures(client, row, target)
        cells = [row["variant"], extra["ran"], cell(row["test_accuracy"]), cell(row["best_val_accuracy"])]
        if target:
            reached = (
                f"{cell(row['epochs_to_target'], 1)} ({row['reached_target']})"
                if row["epochs_to_target"]
                else f"– ({row['reached_target'] or '0/0'})"
            )
            cells += [reached, cell(extra["seconds_to_target"], 1)]
        cells.append(cell(row["wall_seconds"], 1))
        if pruned:
            cells += [cell(row["sparsity"], 3), cell(row["gzip_bytes"], 0)]
        else:
            cells.append(cell(extra["gradient_ratio"], 2, "g"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def get(client: Client, path: str) -> dict:
    """A GET retried once when the connection drops: a long poll loop meets the server closing an idle
    keep-alive connection (gunicorn's 2 s) just as the next request goes out."""
    try:
        return client.request("GET", path).json()
    except TrainerClientError as exc:
        if exc.status is not None:
            raise
        return client.request("GET", path).json()


def wait(client: Client, experiment_id: str) -> dict:
    while (experiment := get(client, f"/v1/experiments/{experiment_id}"))["finished"] < experiment["jobs"]:
        time.sleep(1)
    return experiment


def run(client: Client, path: Path) -> dict:
    return wait(client, client.request("POST", "/v1/experiments", json=json.loads(path.read_text())).json()["id"])


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else None
    names = sys.argv[2:] or sorted(p.stem for p in HERE.glob("*.json"))
    started = time.monotonic()
    with Client(url, timeout=60) as client:
        for name in names:
            began = time.monotonic()
            experiment = run(client, Path(name) if name.endswith(".json") else HERE / f"{name}.json")
            target = experiment["spec"].get("target_accuracy")
            print(f"#### {Path(name).stem}" + (f" (target val accuracy {target})" if target else ""))
            print(experiment["spec"].get("description") or "")
            print()
            print(table(client, experiment))
            print(flush=True)
            print(f"{name}: {experiment['jobs']} jobs in {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    print(f"all: {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
