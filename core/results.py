"""What a finished job and an experiment report: the job's ``result`` and a row of the comparison table.

The worker builds a ``JobResult`` and stores ``JobResult.stored()`` in ``Job.result``; readers (the
experiment comparison) use ``JobResult.model_validate``. The keys are those the HTTP representation has
always shown under ``result``.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from core.plan import TransferChoice

#: The plots a succeeded job stores: drawn by ``worker.plots``, listed in the job's ``links.plots``,
#: served at ``/v1/jobs/{id}/plots/{name}.png``. Named once here.
PlotName = Literal["curves", "sparsity", "layers", "weights"]
PLOTS: tuple[PlotName, ...] = get_args(PlotName)


class LayerSparsity(BaseModel):
    name: str = Field(description="The Keras layer's name in the exported model.")
    params: int = Field(description="Weights of the layer (kernel, bias and any others).")
    nonzero: int = Field(description="Of those, the ones that are not zero.")
    pruned: bool = Field(description="Whether the layer was pruned.")
    sparsity: float | None = Field(None, description="Share of zeros in the kernel (layers with a kernel only).")


class Sparsity(BaseModel):
    overall: float = Field(description="Share of zeros over the pruned kernels (all kernels when none was pruned).")
    layers: list[LayerSparsity] = Field(description="Every layer with weights, read back from the exported model.")
    pruned_layers: list[str] = Field(description="Names of the pruned layers.")
    left_dense: list[str] = Field(description="Names of the layers with weights that were not pruned.")


class ParamCounts(BaseModel):
    total: int = Field(description="Weights of the exported model.")
    nonzero: int = Field(description="Of those, the ones that are not zero.")


class FileSize(BaseModel):
    bytes: int = Field(description="Size of the exported file.")
    gzip_bytes: int = Field(description="Its size gzipped (level 9): zeros only shrink a file once compressed.")


class TransferResult(TransferChoice):
    checksums: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="sha256 of each reused layer's weights per phase (base, frozen, fine_tune): shows what phase 1 "
        "kept and phase 2 moved.",
    )


class Baseline(BaseModel):
    """An uploaded base model as it came, measured before any training: the cost of sparsity is one subtraction."""

    model_id: str = Field(description="The uploaded model measured.")
    test: dict[str, float] = Field(description="Its metrics on the job's test split (the names of `test`).")


class FlopCounts(BaseModel):
    """Counted from the architecture without TensorFlow (``core.layers.LayerBase.flops``)."""

    total: int = Field(description="FLOPs per sample of the exported model: a multiply-add is 2; dense and conv2d only.")
    layers: dict[str, int] = Field(description="Per layer with a kernel, by name.")


class StructuredLayer(BaseModel):
    name: str
    units: int = Field(description="Units (dense) or filters (conv2d) before the shrink.")
    kept: int = Field(description="Of those, the ones the shrunk model keeps.")


class StructuredResult(BaseModel):
    """What structured pruning removed: the masked model before the shrink, the rebuilt one after."""

    norm: str = Field(description="How units were ranked: l1 or l2 of their incoming weights.")
    final_fraction: float
    params_before: int = Field(description="Parameters before the shrink (the masked units still counted).")
    params_after: int = Field(description="Parameters of the shrunk model (before any unstructured pruning).")
    flops_before: int = Field(description="FLOPs per sample before the shrink.")
    flops_after: int = Field(description="FLOPs per sample of the shrunk model.")
    layers: list[StructuredLayer] = Field(description="Each pruned layer: units before and kept.")
    max_shrink_difference: float = Field(
        description="Max |masked − shrunk| over the outputs of a batch of training inputs, checked in the worker."
    )


InferenceFormat = Literal["keras", "tflite_float", "tflite_sparse", "tflite_sparse_int8"]


class Latency(BaseModel):
    median_ms: float = Field(description="Median wall time of one call, in milliseconds.")
    p90_ms: float = Field(description="90th percentile of the same calls, in milliseconds.")
    calls: int = Field(description="Timed calls (after warm-up calls that are not counted).")


class RunMeasure(BaseModel):
    threads: int = Field(description="Threads the runtime was allowed (1, or the worker's CPU count).")
    batch1: Latency = Field(description="Latency of one sample per call.")
    batch256_per_second: float = Field(description="Throughput at batch 256, in samples per second.")


class FormatInference(BaseModel):
    format: InferenceFormat
    bytes: int = Field(description="Size of the file this format is loaded from.")
    gzip_bytes: int = Field(description="Its size gzipped (level 9).")
    peak_memory_bytes: int = Field(
        description="How far the worker's resident memory rose while loading the file and running it at batch 1 "
        "and 256 (Linux: peak VmHWM, reset through /proc/self/clear_refs, minus VmRSS at the reset)."
    )
    single_thread: RunMeasure = Field(description="Measured with one thread.")
    all_threads: RunMeasure | None = Field(None, description="Measured with all the worker's CPUs (absent if not).")


class InferenceReport(BaseModel):
    """Inference measured in the worker on its own CPU, for the trained model and its untrained dense twin."""

    cpu: str = Field(description="The worker's CPU model name (from /proc/cpuinfo).")
    cpu_count: int = Field(description="CPUs the worker sees; the all-threads figures use this many.")
    model: dict[str, FormatInference] = Field(description="The job's model, per format.")
    dense_twin: dict[str, FormatInference] = Field(
        description="The same architecture built by the same builder, untrained and unpruned, per format."
    )
    speedup: dict[str, float] = Field(
        description="Per format: the twin's batch-1 median / the model's batch-1 median, single-thread "
        "(above 1: the model is faster)."
    )


class JobResult(BaseModel):
    """What a succeeded job made: test metrics, sparsity and sizes read back from the exported files."""

    test: dict[str, float] = Field(description="Metrics on the test split (loss and each recipe metric).")
    sparsity: Sparsity
    params: ParamCounts
    sizes: dict[str, FileSize] = Field(description="Per export format.")
    epochs_run: int = Field(description="Epochs trained (fewer than asked after early stopping).")
    train_seconds: float | None = Field(None, description="Wall time of training and the test evaluation.")
    test_before_threshold: dict[str, float] | None = Field(
        None, description="post_training_threshold jobs only: the test metrics before the weights were zeroed."
    )
    transfer: TransferResult | None = Field(None, description="Transfer jobs only: what was reused.")
    baseline: Baseline | None = Field(None, description="Jobs on an uploaded base model: the model before training.")
    flops: FlopCounts | None = Field(None, description="FLOPs per sample of the exported model (not for transfer jobs).")
    structured: StructuredResult | None = Field(None, description="Structured pruning jobs only: what the shrink removed.")
    inference: InferenceReport | None = Field(
        None, description="Measured inference per format, with the dense twin (absent when TRAINER_INFERENCE=off)."
    )

    def stored(self) -> dict[str, Any]:
        """The JSON kept in ``Job.result``: keys that do not apply are absent, as they always were."""
        return self.model_dump(mode="json", exclude_none=True)


class MeanSpread(BaseModel):
    mean: float = Field(description="Mean over the variant's succeeded jobs (rounded to 4 places).")
    spread: float = Field(description="Population standard deviation (0 for a single job).")
    n: int = Field(description="Jobs it is computed over.")


class ComparisonRow(BaseModel):
    """One variant of an experiment over its seeds; a figure is null when no job of the variant has it."""

    variant: str = Field(description="The variant's name.")
    overrides: dict[str, Any] = Field(description="The variant's overrides of the base recipe, by dotted path.")
    jobs: dict[str, str] = Field(description="Job id → status of each of the variant's jobs.")
    test_accuracy: MeanSpread | None = None
    best_val_accuracy: MeanSpread | None = None
    epochs_to_target: MeanSpread | None = Field(
        None, description="First epoch whose val_accuracy reached target_accuracy (jobs that reached it)."
    )
    reached_target: str | None = Field(None, description='"k/n": jobs that reached target_accuracy.')
    wall_seconds: MeanSpread | None = Field(None, description="From start to finish of each job.")
    sparsity: MeanSpread | None = None
    gzip_bytes: MeanSpread | None = Field(None, description="Gzipped size of each job's first export format.")
    target_sparsity: float | None = Field(None, description="The sparsity the variant's pruning asked for.")
    baseline_accuracy: MeanSpread | None = Field(
        None, description="Jobs on an uploaded base model: its test accuracy before any training (dense)."
    )
    tflite_format: str | None = Field(
        None, description="Which TFLite file the next two figures are of (an inference report's format, or 'tflite')."
    )
    tflite_bytes: MeanSpread | None = Field(None, description="Size of that TFLite file.")
    tflite_latency_ms: MeanSpread | None = Field(
        None, description="Its median batch-1 latency, one thread (from the job's inference report, when measured)."
    )
