"""One job, start to end: claim it, train it, store what it made, and say how it ended.

Free of Celery: the task is a one-line call to ``run_job``. While training, a heartbeat thread
writes ``heartbeat_at``, ships the job's log lines and watches for a cancel request. Every way a job
ends early is a ``core.causes.Cause``; its log holds only what the job itself said (the ``trainer.job``
logger), never the worker's own lines about the database or the broker.
"""

from __future__ import annotations

import contextvars
import io
import logging
import os
import socket
import tempfile
import threading
import time
import traceback
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from core import artifacts, checkpoints, job_state, jobs, log_context, structured
from core.causes import Cause, JobError
from core.db import Database
from core.errors import JobStopped
from core.models import Job, JobStatus, utcnow
from core.plan import JobPlan, TransferChoice
from core.recipe import Recipe
from core.results import (
    Baseline,
    FileSize,
    FlopCounts,
    InferenceReport,
    JobResult,
    PlotName,
    StructuredLayer,
    StructuredResult,
    TransferResult,
)
from core.settings import Settings
from worker import checkpoint, shutdown
from worker import metrics as worker_metrics

#: What a client reads at GET /v1/jobs/{id}/logs: lines of this logger (and its children) only.
log = logging.getLogger("trainer.job")
log.setLevel(logging.INFO)  # what a job's log holds does not depend on the level the worker's own log is set to
#: The worker's own lines (database retries, heartbeats): its stdout, never the job's log.
worker_log = logging.getLogger(__name__)


def worker_name(pid: int | None = None) -> str:
    """What ``Job.worker`` holds: the host and the pid of the child that trains (how the parent's
    ``worker.memory_guard`` finds the job of a child it killed or saw killed)."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


class JobLog(logging.Handler):
    """Collects the job's log records for the heartbeat thread to write to the database.

    At most ``limit`` lines per job (over all its attempts; ``kept`` were already stored): later ones
    are only counted, and the final flush says how many were dropped."""

    def __init__(self, limit: int, kept: int = 0):
        super().__init__(logging.INFO)
        self.lines: list[tuple[datetime, str, str]] = []
        self.limit, self.kept, self.dropped = limit, kept, 0
        self._reported = False
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            if self.kept >= self.limit:
                self.dropped += 1
                return
            self.kept += 1
            self.lines.append((utcnow(), record.levelname, record.getMessage()))

    def drain(self, final: bool = False) -> list[tuple[datetime, str, str]]:
        with self._lock:
            lines, self.lines = self.lines, []
            if final and self.dropped and not self._reported:
                self._reported = True
                lines.append(
                    (
                        utcnow(),
                        "WARNING",
                        f"{self.dropped} more lines were dropped: a job keeps at most "
                        f"{self.limit} (TRAINER_MAX_LOG_LINES_PER_JOB)",
                    )
                )
        return lines


class JobRun:
    """The state one running job shares between the training thread and its heartbeat thread."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        job_id: str,
        attempt: int,
        recipe: Recipe,
        progress: dict,
        kept_lines: int = 0,
    ):
        self.db, self.settings, self.job_id, self.attempt, self.recipe = db, settings, job_id, attempt, recipe
        self.base_progress = progress
        self.last_progress: dict = {}
        self.checkpoints = checkpoint.Policy(settings.checkpoint_interval_s, settings.checkpoint_max_share)
        self.pending: list[tuple] = []  # epochs not yet written (the database was unreachable)
        self.log = JobLog(settings.max_log_lines_per_job, kept_lines)
        self.deadline = time.monotonic() + (recipe.training.max_runtime_s or settings.max_runtime_s)
        #: On a hand-back, the epoch under way is finished (and checkpointed) if it should end within this.
        self.finish_epoch_within_s = settings.stop_grace_s / 2
        self._stop: str | None = None
        self._done = threading.Event()
        # the job's log context (core.log_context) goes with it: a thread does not inherit context variables
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._beat,), name=f"heartbeat-{job_id[:8]}", daemon=True
        )

    # -- hooks for worker.training --
    def on_epoch(
        self, epoch: int, metrics: dict, diagnostics: list[dict] | None = None, phase: str = "train", state=None
    ) -> None:
        progress = {**self.base_progress, "epoch": epoch, "phase": phase}
        if "sparsity" in metrics:
            progress["sparsity"] = metrics["sparsity"]
        self.last_progress = {k: progress[k] for k in ("epoch", "sparsity") if k in progress}
        self.pending.append((epoch, phase, metrics, progress, diagnostics))
        worker_metrics.EPOCHS.inc()
        try:
            self._write_epochs(state)
        except OperationalError as exc:  # the database is away: keep training, write these epochs later
            worker_log.warning("epoch %d not stored yet (%s); will retry", epoch, str(exc).splitlines()[0])
        summary = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        log.info("epoch %d/%d %s", epoch, self.recipe.training.epochs, summary)

    def _write_epochs(self, state=None) -> None:
        written, started = None, 0.0
        with self.db.session() as session:
            jobs.append_logs(session, self.job_id, self.log.drain())
            for epoch, phase, metrics, progress, diagnostics in self.pending:
                if not job_state.record_epoch(
                    session, self.job_id, self.attempt, epoch, phase, metrics, progress, diagnostics
                ):
                    self._stop = self._stop or "lost"
                    break
            else:
                if state is not None and (shutdown.requested() or self.checkpoints.due()):  # a hand-back keeps it
                    started = self.checkpoints.clock()
                    written = state()
                    checkpoints.save(session, self.job_id, written, self.settings.artifact_chunk_bytes)
        self.pending = []
        if written is not None:  # timed to the commit: that is what the next one will cost too
            self.checkpoints.record(started, len(written))
            worker_metrics.CHECKPOINT_SECONDS.observe(self.checkpoints.last_seconds)
            if self.checkpoints.written == 1:
                spacing = self.checkpoints.spacing_s()
                log.info(
                    "checkpoint: %d bytes in %.0f ms; %s",
                    len(written),
                    self.checkpoints.last_seconds * 1000,
                    f"the next at least {spacing:.1f} s apart" if spacing else "one after every epoch",
                )

    def flush_pending(self) -> None:
        if self.pending:
            self._write_epochs()

    def stop_reason(self) -> str | None:
        if self._stop is None and time.monotonic() > self.deadline:
            self._stop = "timeout"
        return self._stop or (HANDED_BACK if shutdown.requested() else None)

    # -- heartbeat --
    def start(self) -> None:
        log.addHandler(self.log)  # not the root logger: SQL text and host names stay out of the job's log
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)
        log.removeHandler(self.log)

    def _beat(self) -> None:
        while not self._done.wait(self.settings.heartbeat_interval_s):
            try:
                if shutdown.requested() and not self.last_progress:
                    self._hand_back_now()
                with self.db.session() as session:
                    ours, cancel = job_state.heartbeat(session, self.job_id, self.attempt)
                    jobs.append_logs(session, self.job_id, self.log.drain())
                if not ours:
                    self._stop = self._stop or "lost"
                elif cancel:
                    self._stop = self._stop or "cancelled"
            except Exception as exc:  # a database blip must not kill training; the next beat retries
                worker_log.warning("heartbeat failed: %s", exc)

    def _hand_back_now(self) -> None:
        """A stop asked for before this attempt finished an epoch: there is nothing to checkpoint, and the training
        thread may be inside TensorFlow's first trace (a minute or more on a busy host), where it checks nothing.
        So this thread hands the job back and ends the process: the pool sees its child exit and Celery gives
        the message back to the broker (acks_late, reject_on_worker_lost); the reconciler re-sends it if the
        broker did not keep it (``core.backlog``)."""
        log.warning("the worker is stopping: handed back before this attempt's first epoch; the job is queued again")
        with self.db.session() as session:
            jobs.append_logs(session, self.job_id, self.log.drain(final=True))
            handed = job_state.hand_back(session, self.job_id, self.attempt, self.base_progress)
        if handed:
            worker_log.warning("job %s: handed back before its first epoch; this process exits", self.job_id)
            logging.shutdown()
            os._exit(HANDED_BACK_EXIT)

    def flush_logs(self, session) -> None:
        """The last write of the job's log (with the count of dropped lines, if any)."""
        jobs.append_logs(session, self.job_id, self.log.drain(final=True))


HANDED_BACK = shutdown.HANDED_BACK
#: The exit status of a child that handed its job back from its heartbeat thread (EX_TEMPFAIL: try again).
HANDED_BACK_EXIT = 75


class HandedBack(Exception):
    """Training stopped because the worker is stopping (SIGTERM); the job is queued again, not ended."""


def run_job(db: Database, settings: Settings, job_id: str, device: str = "CPU:0") -> str | None:
    """Returns the job's final status; ``queued`` when it was handed back (or not started: the worker is
    stopping) and must be sent again; None when the job was not ours to run (duplicate delivery). Every log
    line meanwhile carries the job's id (and, once claimed, its owner, attempt and submitting request's id)."""
    started = time.monotonic()
    with log_context.bound(job_id=job_id):
        status = _run_job(db, settings, job_id, device)
    if status is not None:
        worker_metrics.JOB_SECONDS.labels(status).observe(time.monotonic() - started)
    return status


def _run_job(db: Database, settings: Settings, job_id: str, device: str) -> str | None:
    name = worker_name()
    if shutdown.requested():
        worker_log.info("job %s: not started, this worker is stopping", job_id)
        return JobStatus.QUEUED.value
    with db.session() as session:
        attempt = job_state.claim(session, job_id, name)
        if attempt is None:
            worker_log.info("job %s is not queued; nothing to do", job_id)
            return None
        job = jobs.get_any(session, job_id)
        recipe = Recipe.model_validate(job.recipe)
        progress = dict(job.progress or {})
        job_state.update_running(session, job_id, attempt, device=device, progress={**progress, "phase": "starting"})
        kept_lines = jobs.log_line_count(session, job_id)
        plan = JobPlan.model_validate(progress["plan"]) if progress.get("plan") else None
        log_context.bind(owner=job.owner, attempt=attempt, request_id=plan.request_id if plan else None)
        if attempt == 1 and job.started_at is not None:
            worker_metrics.QUEUE_WAIT.observe((job.started_at - job.created_at).total_seconds())
    run = JobRun(db, settings, job_id, attempt, recipe, progress, kept_lines)
    run.start()
    error = None
    try:
        worker_log.info("job %s: attempt %d on %s (%s)", job_id, attempt, name, device)
        log.info("attempt %d on %s: %s", attempt, device, recipe.name)
        status = _train_and_store(run, recipe, device)
    except HandedBack as back:
        status = JobStatus.QUEUED
        log.warning("%s", back)
    except JobStopped as stop:
        status = JobStatus.CANCELLED if stop.cause is Cause.CANCELLED else JobStatus.FAILED
        error = stop.error().stored()
        if status is JobStatus.CANCELLED:
            log.info("%s", stop)
        else:
            log.error("job failed: %s: %s", stop.cause.value, stop)
    except Exception as exc:
        status, error = JobStatus.FAILED, _error_for(exc).stored()
        if isinstance(exc, SQLAlchemyError):  # its text holds SQL and the database's host: the worker's log only
            worker_log.error("job %s failed on the database: %s", job_id, exc, exc_info=True)
            log.error("job failed: %s", error["message"])
        else:
            log.error("job failed: %s\n%s", exc, traceback.format_exc())
    finally:
        run.stop()
    if status == JobStatus.QUEUED:
        _hand_back(run, progress)
        return status.value
    if status != JobStatus.SUCCEEDED:  # a success was recorded with its artifacts, in one transaction

        def record_end() -> None:
            run.flush_pending()
            with db.session() as session:
                run.flush_logs(session)
                job_state.finish(
                    session,
                    job_id,
                    attempt,
                    status,
                    error=error,
                    progress={**progress, **run.last_progress, "phase": status.value},
                )

        with_retries(record_end, settings.db_retry_s, f"recording the job as {status.value}")
    _maybe_compare(db, settings, job_id)
    return status.value


def _hand_back(run: JobRun, progress: dict) -> None:
    """The job back to ``queued`` with its checkpoint, unless it was taken from this attempt meanwhile."""

    def record() -> None:
        run.flush_pending()
        with run.db.session() as session:
            run.flush_logs(session)
            latest = {**progress, **run.last_progress}
            if job_state.hand_back(session, run.job_id, run.attempt, latest):
                return
            cancelled = JobError.of(Cause.CANCELLED, "cancelled while its worker was stopping")
            if job_state.finish(
                session,
                run.job_id,
                run.attempt,
                JobStatus.CANCELLED,
                error=cancelled.stored(),
                progress=job_state.with_phase(latest, JobStatus.CANCELLED.value),
            ):
                log.info("%s", cancelled.message)
            else:
                worker_log.info("job %s: no longer this attempt's to hand back", run.job_id)

    with_retries(record, min(run.settings.db_retry_s, run.settings.stop_grace_s / 2), "handing the job back")


def _maybe_compare(db: Database, settings: Settings, job_id: str) -> None:
    """The worker that ends an experiment's last job draws its comparison (each checks after its own commit,
    so the last one to finish always sees every sibling ended)."""
    try:
        from core import experiments

        with db.session() as session:
            experiment_id = session.scalar(select(Job.experiment_id).where(Job.id == job_id))
            curves = experiments.finished_curves(session, experiment_id) if experiment_id else None
        if experiment_id is None or curves is None:
            return
        from worker import plots

        png = plots.compare(curves)
        with db.session() as session:
            experiments.store_plot(session, experiment_id, png, settings.artifact_chunk_bytes)
            rows = experiments.sweep_rows(session, experiment_id)
        if rows is not None:
            tradeoff = plots.tradeoff(rows)
            with db.session() as session:
                experiments.store_plot(session, experiment_id, tradeoff, settings.artifact_chunk_bytes, name="tradeoff")
    except Exception as exc:  # noqa: BLE001 - a picture must never fail a job
        worker_log.warning("could not draw the experiment's comparison: %s", exc)


MAX_MESSAGE_CHARS = 2000  # TensorFlow's messages can run to pages; the rest is in the job's log


def _error_for(exc: Exception) -> JobError:
    """The cause of an exception that is not a ``JobStopped``: memory, the database, or anything else."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":  # TF's OOM on a device
        return JobError.of(Cause.OUT_OF_MEMORY, f"training ran out of memory: {exc}"[:MAX_MESSAGE_CHARS])
    if isinstance(exc, SQLAlchemyError):
        return JobError.of(
            Cause.TRAINING_ERROR,
            "the worker could not read or write the job in its database "
            f"({type(exc).__name__}); the details are in the worker's own log",
        )
    return JobError.of(Cause.TRAINING_ERROR, (str(exc) or type(exc).__name__)[:MAX_MESSAGE_CHARS])


def _train_and_store(run: JobRun, recipe: Recipe, device: str) -> JobStatus:
    from worker import data, devices, training

    splits = data.split(data.load(run.db, recipe.dataset), recipe.dataset, recipe.seed)
    job_plan = JobPlan.model_validate(run.base_progress["plan"])
    transfer = _reused(run, job_plan.transfer) if job_plan.transfer else None
    log.info(
        "data: %d train, %d validation, %d test samples",
        len(splits.x_train),
        0 if splits.x_val is None else len(splits.x_val),
        len(splits.x_test),
    )
    restarts = recipe.transfer is not None and not recipe.transfer.whole  # a head's phases start again
    phase = _structured_phase(job_plan)
    resume = _checkpoint(run) if run.attempt > 1 and not restarts and phase is None else None
    if run.attempt > 1 and phase is not None:
        log.info("attempt %d: structured pruning starts again from epoch 1 (its model changes at the shrink)", run.attempt)
    for warning in job_plan.warnings:
        log.warning("%s", warning)
    outcome = training.train(
        recipe,
        splits,
        run,
        end_step=job_plan.pruning_end_step,
        device=devices.training_device(device),
        pruned_layers=job_plan.pruned_layers,
        transfer=transfer,
        resume=resume,
        structured_phase=phase,
    )
    worker_metrics.TRAINING_SECONDS.observe(outcome.seconds)
    _raise_if_stopped(run, recipe, outcome)
    _export_and_store(run, recipe, outcome, job_plan, splits.x_test[:THROUGHPUT_ROWS])
    return JobStatus.SUCCEEDED


def _structured_phase(job_plan: JobPlan):
    from worker.training import StructuredPhase

    if job_plan.structured_layers is None or job_plan.structured_end_step is None or job_plan.structured_epochs is None:
        return None
    return StructuredPhase(job_plan.structured_layers, job_plan.structured_end_step, job_plan.structured_epochs)


def _reused(run: JobRun, choice: TransferChoice):
    """The base job's layers the plan chose, loaded fresh from its stored model; or the uploaded model, whole
    (loaded again on every attempt, so a resumed job rebuilds on the same base)."""
    from worker import reuse, training

    if choice.base_model_id is not None:
        with run.db.session() as session:
            owner = jobs.get_any(session, run.job_id).owner
        model = reuse.load_uploaded(run.db, choice.base_model_id, owner)
        log.info("base: uploaded model %s (%d layers reused)", choice.base_model_id, len(choice.reused_layers))
        return training.Transfer(reuse.reused_layers(model, choice.reused_layers), choice, base=model)
    if choice.base_job_id is None:
        raise ValueError("a transfer plan names a base job or a base model")
    base = reuse.load_base(run.db, choice.base_job_id)
    log.info("reusing %s of job %s", ", ".join(choice.reused_layers), choice.base_job_id)
    return training.Transfer(reuse.reused_layers(base, choice.reused_layers), choice)


def _raise_if_stopped(run: JobRun, recipe: Recipe, outcome) -> None:
    """Training that a hook stopped ends the job with the hook's cause."""
    if outcome.stopped == "cancelled":
        raise JobStopped(Cause.CANCELLED, f"cancelled after {outcome.epochs_run} epochs")
    if outcome.stopped == "timeout":
        limit = recipe.training.max_runtime_s or run.settings.max_runtime_s
        raise JobStopped(Cause.TIMEOUT, f"the job ran past its max_runtime_s of {limit} s after {outcome.epochs_run} epochs")
    if outcome.stopped == HANDED_BACK:
        resumes = "starts over (a transfer job's phases restart)" if recipe.transfer else "resumes from its checkpoint"
        raise HandedBack(
            f"the worker is stopping: handed back after epoch {run.last_progress.get('epoch', 0)}; "
            f"the job is queued again and {resumes}"
        )
    if outcome.stopped == "lost":
        raise JobStopped(Cause.WORKER_LOST, "this worker no longer holds the job (it was requeued or cancelled)")


def _flops_and_structured(recipe: Recipe, outcome) -> tuple[FlopCounts | None, StructuredResult | None]:
    """FLOPs of the exported architecture (the shrunk one after structured pruning), counted by ``core``."""
    if recipe.transfer is not None:
        return None, None  # the reused layers are not recipe layers: core cannot count them
    layers, start = recipe.all_layers(), recipe.model.start
    before = structured.flops(layers, start)
    report = outcome.structured
    if report is None or recipe.pruning is None or recipe.pruning.structured is None:
        return FlopCounts(total=sum(before.values()), layers=before), None
    after = structured.flops(structured.shrunk_layers(layers, {n: kept for n, (_, kept) in report.units.items()}), start)
    spec = recipe.pruning.structured
    return FlopCounts(total=sum(after.values()), layers=after), StructuredResult(
        norm=spec.norm,
        final_fraction=spec.final_fraction,
        params_before=report.params_before,
        params_after=report.params_after,
        flops_before=sum(before.values()),
        flops_after=sum(after.values()),
        layers=[StructuredLayer(name=n, units=units, kept=kept) for n, (units, kept) in report.units.items()],
        max_shrink_difference=report.max_difference,
    )


def _result(outcome, files: dict[str, Path], job_plan: JobPlan, recipe: Recipe) -> JobResult:
    """What the job reports, read back from the exported files."""
    from worker import export

    transfer = None
    if outcome.transfer is not None and job_plan.transfer is not None:  # a transfer outcome comes from its plan
        transfer = TransferResult(**job_plan.transfer.model_dump(), **outcome.transfer)
    sizes = {fmt: FileSize(**size) for fmt, size in export.sizes(files).items()}
    flops, structured_result = _flops_and_structured(recipe, outcome)
    return JobResult(
        test=outcome.test,
        **export.sparsity_report(outcome.model, outcome.pruned_layers),
        sizes=sizes,
        epochs_run=outcome.epochs_run,
        train_seconds=round(outcome.seconds, 3),
        test_before_threshold=outcome.test_before_threshold,
        transfer=transfer,
        baseline=Baseline(model_id=job_plan.transfer.base_model_id, test=outcome.baseline)
        if outcome.baseline is not None and job_plan.transfer is not None and job_plan.transfer.base_model_id
        else None,
        flops=flops,
        structured=structured_result,
    )


def _export_and_store(run: JobRun, recipe: Recipe, outcome, job_plan: JobPlan, sample_x=None) -> None:
    """The model files, the result and the plots in one transaction with the job's success."""
    from worker import export

    with tempfile.TemporaryDirectory(prefix=f"job-{run.job_id[:8]}-") as tmp:
        files = export.strip_and_export(outcome.model, recipe.export, Path(tmp))
        result = _result(outcome, files, job_plan, recipe)
        log.info("test %s; sparsity %.4f", outcome.test, result.sparsity.overall)
        if run.settings.inference != "off" and sample_x is not None:
            result.inference = _measure_inference(run, recipe, outcome, files, sample_x)

        pictures = _render_plots(run, recipe, outcome, result.stored(), job_plan)

        def store() -> None:
            run.flush_pending()
            with run.db.session() as session:
                run.flush_logs(session)
                progress = {**run.base_progress, "epoch": outcome.epochs_run, "phase": "succeeded"}
                if not job_state.finish(
                    session, run.job_id, run.attempt, JobStatus.SUCCEEDED, result=result.stored(), progress=progress
                ):
                    raise RuntimeError("the job was taken from this worker before it could store its model")
                for fmt, path in files.items():
                    with path.open("rb") as fh:
                        artifacts.store(
                            session,
                            fh,
                            kind="model",
                            format=fmt,
                            filename=f"{run.job_id}-{path.name}",
                            chunk_bytes=run.settings.artifact_chunk_bytes,
                            job_id=run.job_id,
                        )
                for name, png in pictures.items():
                    artifacts.store(
                        session,
                        io.BytesIO(png),
                        kind="plot",
                        format="png",
                        filename=f"{name}.png",
                        chunk_bytes=run.settings.artifact_chunk_bytes,
                        job_id=run.job_id,
                    )

        with_retries(store, run.settings.db_retry_s, "storing the trained model")


#: Test inputs handed to the inference measurement (tiled to its batch of 256).
THROUGHPUT_ROWS = 256


def _measure_inference(run: JobRun, recipe: Recipe, outcome, files: dict[str, Path], sample_x) -> InferenceReport | None:
    """The job's progress says it is measuring; a model that cannot be measured (a conversion TFLite refuses) is
    logged and reported without ``inference``, never a failed job: its training is done and stored."""
    from worker import inference

    started = time.perf_counter()
    progress = {**run.base_progress, "epoch": outcome.epochs_run, "phase": "inference"}
    try:
        with run.db.session() as session:
            job_state.update_running(session, run.job_id, run.attempt, progress=progress)
    except OperationalError as exc:  # only a progress note: the measurement goes on
        worker_log.warning("could not show the inference phase: %s", str(exc).splitlines()[0])
    try:
        twin = inference.dense_twin(outcome.model, recipe)
        exported = inference.reusable_exports(files, recipe.export)
        report = inference.measure(outcome.model, twin, sample_x, run.settings, exported)
    except Exception as exc:  # noqa: BLE001 - see docstring
        log.warning("could not measure inference: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    fmt = "tflite_sparse" if "tflite_sparse" in report.speedup else next(iter(report.speedup), None)
    log.info(
        "inference measured in %.1f s on %d CPUs; %s",
        time.perf_counter() - started,
        report.cpu_count,
        f"{fmt} batch-1 median {report.model[fmt].single_thread.batch1.median_ms:.3f} ms, "
        f"{report.speedup[fmt]:.2f}x the dense twin"
        if fmt
        else "no format",
    )
    return report


def _render_plots(run: JobRun, recipe: Recipe, outcome, result: dict, job_plan: JobPlan) -> dict[PlotName, bytes]:
    """Pictures are a courtesy: a failure to draw them is logged, never a failed job."""
    try:
        from worker import plots

        run.flush_pending()
        with run.db.session() as session:
            history = jobs.history(session, run.job_id)
        final = [layer.kernel.numpy() for layer in outcome.model.layers if getattr(layer, "kernel", None) is not None]
        # after structured pruning, TF-MOT's steps count from the shrink: its target curve would be drawn misplaced
        end_step = None if job_plan.structured_epochs is not None else job_plan.pruning_end_step
        return plots.render(history, recipe, result, job_plan.steps_per_epoch, end_step, outcome.initial_kernels, final)
    except Exception as exc:  # noqa: BLE001 - see docstring
        log.warning("could not draw the plots: %s", exc)
        return {}


def with_retries(action, give_up_after_s: float, what: str):
    """Retry through a database outage: a trained model is not thrown away because the database blinked."""
    deadline, delay = time.monotonic() + give_up_after_s, 0.5
    while True:
        try:
            return action()
        except OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            worker_log.warning("%s failed (%s); retrying in %.1fs", what, str(exc).splitlines()[0], delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _checkpoint(run: JobRun):
    from worker import checkpoint

    with run.db.session() as session:
        stored = checkpoints.find(session, run.job_id)
    if stored is None:
        log.info("attempt %d: no checkpoint; starting from epoch 1", run.attempt)
        return None
    state = checkpoint.parse(artifacts.read_all(run.db, stored))
    log.info("attempt %d: resuming from the checkpoint after epoch %d", run.attempt, state.epoch)
    return state
