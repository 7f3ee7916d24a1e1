"""The job plan: what admission promised and the worker reads back — split sizes, steps, the resolved
pruning end step, the layers to prune and the transfer choice.

Written into ``Job.progress["plan"]`` with ``JobPlan.stored()`` and read with ``JobPlan.model_validate``;
the stored keys are the ones the HTTP representation has always shown under ``progress.plan``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from core.advice import selu_warnings
from core.errors import RecipeError
from core.recipe import Recipe
from core.splits import split_counts
from core.steps import resolve_end_step, steps_per_epoch

if TYPE_CHECKING:
    from core.datasets import DatasetInfo


class TransferChoice(BaseModel):
    """Which layers of a finished job (or an uploaded model) a transfer job reuses, and how it thaws them
    (``core.transfer.resolve``)."""

    base_job_id: str | None = Field(None, description="The succeeded job whose stored model is reused.")
    base_model_id: str | None = Field(None, description="Or: the uploaded model that is reused.")
    whole: bool | None = Field(None, description="reuse 'all': the whole base is trained and pruned (no head, no phases).")
    reused_layers: list[str] = Field(description="Names of the base model's Keras layers reused, bottom first.")
    unfreeze_layers: list[str] = Field(description="Reused layers trained again in the fine-tune phase.")
    fine_tune_learning_rate: float = Field(description="The optimizer's learning rate in the fine-tune phase.")


class JobPlan(BaseModel):
    """Sizes the worker will see and what it must do, fixed when the job is admitted."""

    train_samples: int = Field(description="Samples trained on (after the test and validation splits and `limit`).")
    validation_samples: int = Field(description="Samples held out for validation after each epoch.")
    test_samples: int = Field(description="Samples of the final test evaluation.")
    steps_per_epoch: int = Field(description="Batches per epoch: ceil(train_samples / batch_size).")
    total_steps: int = Field(description="steps_per_epoch × epochs.")
    warnings: list[str] = Field(default_factory=list, description="Advice about the recipe (e.g. SELU's conditions).")
    pruning_end_step: int | None = Field(
        None, description="The step the pruning schedule reaches its target (`end_step: auto` resolved)."
    )
    estimated_training_bytes: int | None = Field(None, description="Admission's estimate of the training memory.")
    transfer: TransferChoice | None = Field(None, description="Transfer jobs only: the reused layers.")
    pruned_layers: list[str] | None = Field(None, description="Pruning jobs only: names of the layers pruned.")
    params: int | None = Field(None, description="Parameters of the whole model, reused layers included.")
    n_classes: int | None = Field(None, description="Classes of the dataset as the recipe selects it.")
    structured_end_step: int | None = Field(
        None, description="Structured pruning only: the step its masks reach final_fraction (`end_step: auto` resolved)."
    )
    structured_epochs: int | None = Field(
        None, description="Structured pruning only: epochs before the shrink (the rest fine-tune the shrunk model)."
    )
    structured_layers: list[str] | None = Field(None, description="Structured pruning only: layers that lose units.")
    flops: int | None = Field(
        None, description="FLOPs per sample of the model as built (a multiply-add is 2; dense and conv2d kernels only)."
    )
    request_id: str | None = Field(
        None, description="The X-Request-Id of the request that submitted the job: the worker logs its lines with it."
    )

    def stored(self) -> dict[str, Any]:
        """The JSON kept in ``progress["plan"]``: keys that do not apply are absent, as they always were."""
        return self.model_dump(mode="json", exclude_none=True)


def plan_for(recipe: Recipe, info: DatasetInfo) -> JobPlan:
    """Sizes the worker will see (split, steps, the resolved pruning end_step) and warnings for the user.

    ``info`` is the dataset as the recipe selects it (``core.selection.describe``); admission
    (``core.admission.check``) adds what needs the model: parameters, memory, pruned and reused layers.
    """
    counts = split_counts(info.n_samples, info.n_test_samples or None, recipe.dataset)
    steps = steps_per_epoch(counts.train, recipe.training.batch_size)
    total = steps * recipe.training.epochs
    end_step = structured_end = structured_epochs = None
    structured = recipe.pruning.structured if recipe.pruning else None
    if structured is not None:  # the structured phase first; TF-MOT's schedule counts from the shrink
        structured_epochs = structured.epochs or recipe.training.epochs
        try:
            structured_end = resolve_end_step(structured, steps * structured_epochs)
        except ValueError as exc:
            raise RecipeError(["pruning", "structured", "end_step"], str(exc)) from None
        total = steps * (recipe.training.epochs - structured_epochs)
    if recipe.pruning and recipe.pruning.schedule:
        try:
            end_step = resolve_end_step(recipe.pruning.schedule, total)
        except ValueError as exc:
            raise RecipeError(["pruning", "schedule", "end_step"], str(exc)) from None
    total = steps * recipe.training.epochs
    return JobPlan(
        train_samples=counts.train,
        validation_samples=counts.validation,
        test_samples=counts.test,
        steps_per_epoch=steps,
        total_steps=total,
        warnings=selu_warnings(recipe),
        pruning_end_step=end_step,
        structured_end_step=structured_end,
        structured_epochs=structured_epochs,
    )
