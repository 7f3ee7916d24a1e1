"""Run the seed's comparisons through the API and print each table as Markdown.

``python examples/experiments/run.py [URL] [name …]`` — every ``*.json`` here by default.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent


def cell(stat, digits=3) -> str:
    if not stat:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['spread']:.{digits}f}" if stat["n"] > 1 else f"{stat['mean']:.{digits}f}"


def table(experiment: dict) -> str:
    lines = ["| variant | test accuracy | best val accuracy | epochs to target | wall s | sparsity | gzip bytes |",
             "|---|---|---|---|---|---|---|"]
    for row in experiment["comparison"]:
        reach = f"{cell(row['epochs_to_target'], 1)} ({row['reached_target']})" if row["reached_target"] else "–"
        lines.append(f"| {row['variant']} | {cell(row['test_accuracy'])} | {cell(row['best_val_accuracy'])} | {reach} "
                     f"| {cell(row['wall_seconds'], 1)} | {cell(row['sparsity'], 2)} | {cell(row['gzip_bytes'], 0)} |")
    return "\n".join(lines)


def run(http: httpx.Client, path: Path) -> dict:
    response = http.post("/v1/experiments", json=json.loads(path.read_text()))
    response.raise_for_status()
    experiment = response.json()
    while (experiment := http.get(f"/v1/experiments/{experiment['id']}").json())["finished"] < experiment["jobs"]:
        time.sleep(1)
    return experiment


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    names = sys.argv[2:] or sorted(p.stem for p in HERE.glob("*.json"))
    with httpx.Client(base_url=url, timeout=60) as http:
        for name in names:
            experiment = run(http, HERE / f"{name}.json")
            target = experiment["spec"].get("target_accuracy")
            print(f"### {name}" + (f" (target val accuracy {target})" if target else ""))
            print(experiment["spec"].get("description") or "")
            print()
            print(table(experiment))
            print(flush=True)


if __name__ == "__main__":
    main()
