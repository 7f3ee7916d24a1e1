"""Stripped model → files in every asked format, and what a user reads about them (sizes, sparsity)."""
from __future__ import annotations

import gzip
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from worker.tf_env import tf

FILENAMES = {"h5": "model.h5", "keras": "model.keras", "savedmodel": "savedmodel.zip", "tflite": "model.tflite"}


def strip_and_export(model, formats: list[str], directory: Path) -> dict[str, Path]:
    """``model`` is already stripped of pruning wrappers; each file loads with stock tf_keras / tf.lite."""
    out = {}
    for fmt in formats:
        path = directory / FILENAMES[fmt]
        if fmt == "h5":
            with warnings.catch_warnings():  # "HDF5 is legacy": h5 is still what most stock tools read
                warnings.simplefilter("ignore", UserWarning)
                model.save(path, include_optimizer=False, save_format="h5")
        elif fmt == "keras":
            model.save(path)  # the native format has no include_optimizer; the stripped model has none worth keeping
        elif fmt == "savedmodel":
            with tempfile.TemporaryDirectory(dir=directory) as tmp:
                model.save(Path(tmp) / "savedmodel", include_optimizer=False, save_format="tf")
                shutil.make_archive(str(path.with_suffix("")), "zip", tmp, "savedmodel")
        elif fmt == "tflite":
            path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        out[fmt] = path
    return out


def sizes(files: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Raw and gzipped: zeros only shrink a file once it is compressed."""
    return {
        fmt: {"bytes": path.stat().st_size, "gzip_bytes": len(gzip.compress(path.read_bytes(), compresslevel=9))}
        for fmt, path in files.items()
    }


def sparsity_report(model, pruned: list[str]) -> dict:
    """Read back from the stripped weights, so it is what the exported files hold."""
    layers, zeros, total = [], 0, 0
    params_total = params_nonzero = 0
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        count = sum(int(w.size) for w in weights)
        nonzero = sum(int(np.count_nonzero(w)) for w in weights)
        params_total += count
        params_nonzero += nonzero
        kernel = getattr(layer, "kernel", None)
        entry = {"name": layer.name, "params": count, "nonzero": nonzero, "pruned": layer.name in pruned}
        if kernel is not None:
            k = kernel.numpy()
            entry["sparsity"] = round(float(np.mean(k == 0)), 6)
            if layer.name in pruned or not pruned:
                zeros += int(np.sum(k == 0))
                total += int(k.size)
        layers.append(entry)
    return {
        "sparsity": {
            "overall": round(zeros / total, 6) if total else 0.0,
            "layers": layers,
            "pruned_layers": pruned,
            "left_dense": [entry["name"] for entry in layers if not entry["pruned"]],
        },
        "params": {"total": params_total, "nonzero": params_nonzero},
    }
