"""Pictures of what training did, rendered once at the end of a job (matplotlib, Agg) and stored as PNGs.

curves: loss and accuracy, train vs validation, phases marked. sparsity: measured sparsity at each epoch's
end against the schedule's target. layers: sparsity per layer. weights: kernel weights at initialization
vs trained (and pruned) — L1 and pruning pile weights up at zero.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.recipe import ConstantSparsity, PolynomialDecay, Recipe  # noqa: E402
from core.results import PLOTS, ComparisonRow, PlotName  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def curves(history: list[dict]) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [row["epoch"] for row in history]
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, label=key)
        for prev, row in zip(history, history[1:]):
            if row.get("phase") != prev.get("phase"):
                ax.axvline(row["epoch"] - 0.5, color="grey", lw=0.8)
                ax.annotate(
                    row.get("phase", ""),
                    (row["epoch"] - 0.5, 0.95),
                    xycoords=("data", "axes fraction"),
                    fontsize=8,
                    color="grey",
                )
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        if ax.lines:
            ax.legend(fontsize=8)
    return _png(fig)


def target_sparsity(schedule: PolynomialDecay | ConstantSparsity, step: int, end_step: int) -> float:
    """The schedule's own formula (TF-MOT's PolynomialDecay / ConstantSparsity), for comparison."""
    if step < schedule.begin_step:
        return 0.0
    if isinstance(schedule, PolynomialDecay):
        p = min(1.0, max(0.0, (step - schedule.begin_step) / max(1, end_step - schedule.begin_step)))
        return schedule.final_sparsity + (schedule.initial_sparsity - schedule.final_sparsity) * (1 - p) ** schedule.power
    return schedule.target_sparsity


def sparsity(history: list[dict], recipe: Recipe, steps_per_epoch: int, end_step: int | None) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps = [row["epoch"] * steps_per_epoch for row in history]
    ax.plot(steps, [row.get("sparsity", 0.0) for row in history], "o-", label="measured (kernels of pruned layers)")
    schedule = recipe.pruning.schedule if recipe.pruning else None
    if schedule and end_step:
        grid = np.linspace(0, max(steps or [1]), 200)
        ax.plot(grid, [target_sparsity(schedule, int(s), end_step) for s in grid], "--", label="schedule target")
    ax.set_xlabel("training step")
    ax.set_ylabel("sparsity")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    return _png(fig)


def layers(report: dict) -> bytes:
    rows = [layer for layer in report["sparsity"]["layers"] if "sparsity" in layer]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * max(1, len(rows))))
    names = [row["name"] for row in rows]
    ax.barh(names, [row["sparsity"] for row in rows], color=["C1" if row["pruned"] else "C0" for row in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("kernel sparsity (orange: pruned)")
    ax.invert_yaxis()
    return _png(fig)


def weights(initial: list[np.ndarray], final: list[np.ndarray]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    before = np.concatenate([k.ravel() for k in initial]) if initial else np.zeros(1)
    after = np.concatenate([k.ravel() for k in final]) if final else np.zeros(1)
    limit = float(np.percentile(np.abs(np.concatenate([before, after])), 99.5)) or 1.0
    bins = np.linspace(-limit, limit, 81).tolist()
    ax.hist(before, bins=bins, alpha=0.5, label="at initialization")
    ax.hist(after, bins=bins, alpha=0.5, label=f"trained ({np.mean(after == 0):.0%} exactly zero)")
    ax.set_yscale("log")
    ax.set_xlabel("kernel weight")
    ax.legend(fontsize=8)
    return _png(fig)


def render(
    history: list[dict],
    recipe: Recipe,
    report: dict,
    steps_per_epoch: int,
    end_step: int | None,
    initial_kernels: list[np.ndarray],
    final_kernels: list[np.ndarray],
) -> dict[PlotName, bytes]:
    """Every plot of ``core.results.PLOTS``, by name."""
    drawn: dict[PlotName, bytes] = {
        "curves": curves(history),
        "sparsity": sparsity(history, recipe, steps_per_epoch, end_step),
        "layers": layers(report),
        "weights": weights(initial_kernels, final_kernels),
    }
    assert tuple(drawn) == PLOTS, "core.results.PLOTS and the plots drawn here differ"
    return drawn


def compare(curves: dict[str, list[list[dict]]], metric: str = "val_accuracy") -> bytes:
    """One line per variant: the mean over its seeds, with the seeds' range shaded."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for index, (variant, runs) in enumerate(sorted(curves.items())):
        length = min(len(run) for run in runs)
        if not length:
            continue
        values = np.array([[row.get(metric) or np.nan for row in run[:length]] for run in runs], dtype=float)
        epochs = np.arange(1, length + 1)
        ax.plot(epochs, np.nanmean(values, axis=0), label=variant, color=f"C{index}")
        if len(runs) > 1:
            ax.fill_between(epochs, np.nanmin(values, axis=0), np.nanmax(values, axis=0), alpha=0.15, color=f"C{index}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    return _png(fig)


def tradeoff(rows: list[ComparisonRow]) -> bytes:
    """A sweep: test accuracy (mean, bars the spread over seeds) against the sparsity each variant reached, its
    gzipped size on a second axis, and the uploaded base model's dense accuracy as a line when it was measured."""
    points = sorted(
        (row for row in rows if row.sparsity is not None and row.test_accuracy is not None),
        key=lambda row: row.sparsity.mean if row.sparsity else 0.0,
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [row.sparsity.mean for row in points if row.sparsity]
    accuracy = [row.test_accuracy for row in points if row.test_accuracy]
    ax.errorbar(
        xs,
        [a.mean for a in accuracy],
        yerr=[a.spread for a in accuracy],
        fmt="o-",
        capsize=3,
        color="C0",
        label="test accuracy (mean ± spread over seeds)",
    )
    for row, x, a in zip(points, xs, accuracy):
        ax.annotate(row.variant, (x, a.mean), textcoords="offset points", xytext=(4, 6), fontsize=7, color="grey")
    baselines = [row.baseline_accuracy.mean for row in rows if row.baseline_accuracy is not None]
    if baselines:
        ax.axhline(float(np.mean(baselines)), color="C2", ls="--", label=f"dense base model ({np.mean(baselines):.3f})")
    ax.set_xlabel("sparsity reached (pruned kernels)")
    ax.set_ylabel("test accuracy")
    size_axis = ax.twinx()
    sized = [(x, row.gzip_bytes.mean) for row, x in zip(points, xs) if row.gzip_bytes is not None]
    if sized:
        size_axis.plot([x for x, _ in sized], [b / 1024 for _, b in sized], "s:", color="C1", label="gzipped model (KiB)")
    size_axis.set_ylabel("gzipped model file (KiB)")
    handles = ax.get_legend_handles_labels()[0] + size_axis.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + size_axis.get_legend_handles_labels()[1]
    ax.legend(handles, labels, fontsize=8, loc="lower left")
    return _png(fig)
