"""``trainer``: submit recipes, follow them while they train, fetch their models — from a terminal.

click parses arguments, prompts and sets exit codes; rich draws tables and progress bars; everything
the CLI knows comes through ``trainer_client.sdk``, i.e. over HTTP. Results go to stdout, progress and
errors to stderr, so ``trainer --json status ID | jq`` or ``trainer history ID --csv > h.csv`` stay clean.

Exit codes: 0 success; 1 the job failed or was cancelled, or the server refused (404, 409, 5xx,
unreachable, checksum mismatch); 2 what was sent is invalid (400/413/415/422, as click's own usage
errors); 130 interrupted while waiting.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from trainer_client.sdk import (
    DEFAULT_URL,
    STATUSES,
    Client,
    Experiment,
    Job,
    TrainerClientError,
    WaitTimeout,
    base_model_recipe,
    sparsity_sweep,
)

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
BAD_INPUT = frozenset({400, 413, 415, 422})
FORMATS = ("h5", "keras", "savedmodel", "tflite")
STATUS_STYLE = {"queued": "yellow", "running": "cyan", "succeeded": "green", "failed": "red", "cancelled": "magenta"}
HISTORY_COLUMNS = ("epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "sparsity", "learning_rate", "seconds")
HISTORY_LABELS = {"accuracy": "acc", "val_accuracy": "val_acc", "learning_rate": "lr"}
VARYING_ONLY = frozenset({"phase", "learning_rate"})


@dataclass
class Session:
    """What every command needs: the SDK client, the output mode and the two consoles."""

    client: Client
    as_json: bool
    out: Console
    err: Console

    def emit(self, data: object) -> None:
        """Machine output: plain JSON on stdout, nothing else there."""
        click.echo(json.dumps(data, indent=2))


class TrainerGroup(click.Group):
    """Turns a TrainerClientError from any command into one line on stderr and an exit code.

    Done once here so commands stay straight-line code and every failure is reported the same way.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TrainerClientError as exc:
            report_problem(exc, as_json=getattr(ctx.obj, "as_json", False))
            ctx.exit(EXIT_BAD_INPUT if exc.status in BAD_INPUT else EXIT_FAILED)


def report_problem(exc: TrainerClientError, as_json: bool) -> None:
    """The server's own ``detail`` is the message; --json gets the whole problem as JSON."""
    if as_json:
        click.echo(json.dumps(exc.as_dict()), err=True)
        return
    click.echo(f"Error: {exc}", err=True)
    if exc.status == 401:
        click.echo("Hint: pass --token or set TRAINER_TOKEN", err=True)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and (session := ctx.find_object(Session)) is not None:
        session.as_json = True


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    expose_value=False,
    callback=_set_json,
    help="Plain JSON on stdout (also accepted before the command).",
)


@click.group(cls=TrainerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url", envvar="TRAINER_URL", default=DEFAULT_URL, show_default=True, help="The service's base URL (env TRAINER_URL)."
)
@click.option("--token", envvar="TRAINER_TOKEN", help="Sent as 'Authorization: Bearer …' (env TRAINER_TOKEN).")
@click.option("--json", "as_json", is_flag=True, help="Machine output: plain JSON on stdout.")
@click.pass_context
def cli(ctx: click.Context, url: str, token: str | None, as_json: bool) -> None:
    """Train Keras models on the training service: submit recipes, follow them, download the models."""
    client = ctx.with_resource(Client(url, token))
    ctx.obj = Session(client, as_json, Console(highlight=False), Console(stderr=True, highlight=False))


# -- commands ----------------------------------------------------------------------------------------


@cli.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow the job to its end; exit 1 unless it succeeds.")
@click.option(
    "--poll",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="While waiting, each request is held by the server until the job changes (?wait=); this is the least "
    "time between two requests that found nothing new.",
)
@click.option("--timeout", type=click.FloatRange(min=0), help="Stop waiting after this many seconds (exit 1).")
@json_option
@click.pass_obj
def submit(s: Session, recipe: Path, wait: bool, poll: float, timeout: float | None) -> None:
    """Submit RECIPE (a JSON file) as a new job."""
    job = s.client.submit(recipe)
    click.echo(f"Submitted job {job.id} ({job.status})", err=True)
    for warning in job.data.get("warnings") or []:
        click.echo(f"Warning: {warning}", err=True)
    if wait:
        follow(s, job, poll, timeout)
    show_job(s, job)
    if wait:
        conclude(job)


@cli.command()
@click.argument("job_id")
@json_option
@click.pass_obj
def status(s: Session, job_id: str) -> None:
    """Show a job: status, progress, last epoch, and its result or error."""
    show_job(s, s.client.job(job_id))


@cli.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only jobs in this state.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="At most this many jobs.")
@json_option
@click.pass_obj
def list_jobs(s: Session, status: str | None, limit: int) -> None:
    """List jobs, newest first."""
    jobs = s.client.jobs(status=status, limit=limit)
    if s.as_json:
        s.emit([job.data for job in jobs])
    else:
        s.out.print(jobs_table(jobs))


@cli.command()
@click.argument("job_id")
@json_option
@click.pass_obj
def cancel(s: Session, job_id: str) -> None:
    """Cancel a job: a queued one at once, a running one at its next batch."""
    job = s.client.job(job_id, fetch=False).cancel()
    if s.as_json:
        s.emit(job.data)
    elif job.status == "cancelled":
        s.out.print(f"Job {job.id} cancelled")
    else:
        s.out.print(f"Cancel requested: job {job.id} is {job.status} and stops at its next batch")


@cli.command()
@click.argument("job_id")
@click.option("--csv", "as_csv", is_flag=True, help="The server's CSV, as is.")
@json_option
@click.pass_obj
def history(s: Session, job_id: str, as_csv: bool) -> None:
    """Per-epoch metrics of a job."""
    job = s.client.job(job_id, fetch=False)
    if as_csv:
        click.echo(job.history_csv(), nl=False)
    elif s.as_json:
        s.emit(job.history())
    else:
        s.out.print(history_table(job.history()))


@cli.command()
@click.argument("job_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="h5", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="File or directory to write (default: the server's filename, here).",
)
@json_option
@click.pass_obj
def download(s: Session, job_id: str, fmt: str, output: Path | None) -> None:
    """Download a job's model, verify its sha256 and print it (as sha256sum does)."""
    job = s.client.job(job_id, fetch=False)
    with Progress(
        TextColumn(fmt),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=s.err,
        transient=True,
        disable=s.as_json or not s.err.is_terminal,
    ) as bar:
        task = bar.add_task("download", total=None)
        saved = job.download(output, format=fmt, progress=lambda done, total: bar.update(task, completed=done, total=total))
    if s.as_json:
        s.emit({"job_id": job_id, "format": fmt, "path": str(saved.path), "sha256": saved.sha256, "bytes": saved.size})
        return
    click.echo(f"{saved.sha256}  {saved.path}")
    click.echo(f"Saved {saved.size:,} bytes; sha256 verified against the server's checksum", err=True)


# -- waiting -----------------------------------------------------------------------------------------


MODEL_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_SUFFIXES = (".keras", ".h5")


def sparsities(_ctx: click.Context, _param: click.Parameter, value: str) -> list[float]:
    try:
        values = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers, e.g. 0.5,0.8,0.9") from None
    if not values:
        raise click.BadParameter("give at least one sparsity, e.g. 0.5,0.8,0.9")
    return values


@cli.command()
@click.argument("model_or_recipe")
@click.option("--sparsity", "targets", required=True, callback=sparsities, help="Target sparsities, e.g. 0.5,0.8,0.9.")
@click.option("--dataset", required=True, help="Built-in dataset name or uploaded dataset id.")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1, 10), help="Seeds per sparsity.")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs per job (default: the recipe's; 2 on a model).")
@click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(min=0.05), help="Seconds between polls.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Stop waiting after this many seconds (exit 1).")
@json_option
@click.pass_obj
def sweep(
    s: Session,
    model_or_recipe: str,
    targets: list[float],
    dataset: str,
    repeats: int,
    epochs: int | None,
    poll: float,
    timeout: float | None,
) -> None:
    """Prune MODEL_OR_RECIPE to each sparsity and show what each costs in accuracy, size and latency.

    MODEL_OR_RECIPE is a recipe (JSON file), an uploaded model's id, or a .keras/.h5 file (uploaded first).
    """
    base = sweep_base(s, model_or_recipe, dataset, epochs)
    experiment = s.client.create_experiment(sparsity_sweep(base, targets, repeats))
    click.echo(f"Sweep {experiment.id}: {experiment.jobs} jobs", err=True)
    try:
        if s.as_json:
            experiment.wait(poll=poll, timeout=timeout)
        else:
            with JobsProgress(s.err, experiment) as bar:
                experiment.wait(poll=poll, timeout=timeout, on_update=bar.update)
    except KeyboardInterrupt:
        click.echo(f"\nStopped watching; the sweep goes on (GET /v1/experiments/{experiment.id})", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except WaitTimeout as exc:
        click.echo(f"Error: {exc}; it goes on on the server", err=True)
        raise click.exceptions.Exit(EXIT_FAILED) from None
    if s.as_json:
        s.emit(experiment.data)
    else:
        s.out.print(sweep_table(experiment))
        if experiment.data["links"].get("tradeoff_plot"):
            click.echo(f"Plot: {s.client.url}{experiment.data['links']['tradeoff_plot']}", err=True)
    statuses = {status for row in experiment.comparison for status in row["jobs"].values()}
    if statuses != {"succeeded"}:
        click.echo(f"Error: not every job succeeded ({', '.join(sorted(statuses))})", err=True)
        raise click.exceptions.Exit(EXIT_FAILED)


def sweep_base(s: Session, given: str, dataset: str, epochs: int | None) -> dict[str, Any]:
    """The recipe a sweep varies: a recipe file with --dataset and --epochs applied, or one on an uploaded model
    (a model file is uploaded first)."""
    path = Path(given)
    if path.suffix.lower() in MODEL_SUFFIXES:
        if not path.is_file():
            raise click.BadParameter(f"no file {given!r}", param_hint="MODEL_OR_RECIPE")
        click.echo(f"Uploading {path.name} …", err=True)
        model = s.client.upload_model(path)
        click.echo(f"Model {model['id']} is {model['status']}", err=True)
        given = model["id"]
    elif path.is_file():
        try:
            recipe: dict[str, Any] = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"{given} is not a JSON recipe: {exc}", param_hint="MODEL_OR_RECIPE") from None
        if not isinstance(recipe, dict):
            raise click.BadParameter(f"{given} is not a JSON object", param_hint="MODEL_OR_RECIPE")
        recipe["dataset"] = {**(recipe.get("dataset") or {}), "name": dataset}
        if epochs is not None:
            recipe["training"] = {**(recipe.get("training") or {}), "epochs": epochs}
        return recipe
    if not MODEL_ID.match(given):
        raise click.BadParameter(
            f"{given!r} is neither a recipe file, a .keras/.h5 file nor a model id", param_hint="MODEL_OR_RECIPE"
        )
    return base_model_recipe(given, dataset, epochs or 2)


class JobsProgress:
    """A rich progress bar fed by ``Experiment.wait(on_update=…)``: child jobs ended of all."""

    def __init__(self, console: Console, experiment: Experiment):
        self.bar = Progress(
            TextColumn("[bold]sweep"),
            TextColumn("jobs"),
            MofNCompleteColumn(),
            BarColumn(bar_width=20),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.bar.add_task("sweep", total=experiment.jobs, completed=experiment.finished)

    def __enter__(self) -> JobsProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, experiment: Experiment) -> None:
        self.bar.update(self.task, total=experiment.jobs, completed=experiment.finished)


def mean_spread(figure: dict[str, Any] | None, digits: int = 4, scale: float = 1.0) -> str:
    if not figure:
        return "-"
    mean, spread = figure["mean"] * scale, figure["spread"] * scale
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if figure.get("n", 1) > 1 else f"{mean:.{digits}f}"


def sweep_table(experiment: Experiment) -> Table:
    """What each sparsity costs: accuracy (and its drop from the dense base), gzipped size, TFLite size, latency."""
    rows = experiment.comparison
    baseline = next((row["baseline_accuracy"] for row in rows if row.get("baseline_accuracy")), None)
    title = "Sparsity sweep" + (f" — dense base model: test accuracy {baseline['mean']:.4f}" if baseline else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    formats = {str(row["tflite_format"]) for row in rows if row.get("tflite_format")}
    for name in ("target", "reached", "test accuracy", "Δ vs dense", "gzip KiB", "TFLite KiB", "batch-1 ms"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        accuracy = row.get("test_accuracy")
        drop = f"{accuracy['mean'] - baseline['mean']:+.4f}" if accuracy and baseline else "-"
        table.add_row(
            fmt(row.get("target_sparsity"), 3),
            mean_spread(row.get("sparsity"), 3),
            mean_spread(accuracy),
            drop,
            mean_spread(row.get("gzip_bytes"), 1, 1 / 1024),
            mean_spread(row.get("tflite_bytes"), 1, 1 / 1024),
            mean_spread(row.get("tflite_latency_ms"), 3),
        )
    if formats:
        timed = any(row.get("tflite_latency_ms") for row in rows)
        table.caption = f"TFLite: {', '.join(sorted(formats))}" + (
            "; latency: median, one thread, the server's CPU" if timed else ""
        )
    return table


def follow(s: Session, job: Job, poll: float, timeout: float | None) -> None:
    """Wait with a live bar (none with --json); on Ctrl-C offer to cancel, then exit 130."""
    try:
        if s.as_json:
            job.wait(poll=poll, timeout=timeout)
        else:
            with EpochProgress(s.err, job) as bar:
                job.wait(poll=poll, timeout=timeout, on_update=bar.update)
    except KeyboardInterrupt:
        offer_cancel(job)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except WaitTimeout as exc:
        click.echo(f"Error: {exc}; it goes on on the server (trainer status {job.id})", err=True)
        raise click.exceptions.Exit(EXIT_FAILED) from None


def offer_cancel(job: Job) -> None:
    """Ctrl-C only stops watching; the job runs on the server until someone cancels it, so ask."""
    click.echo("", err=True)
    if click.confirm(f"Cancel job {job.id}?", default=False, err=True):
        job.cancel()
        state = "cancelled" if job.status == "cancelled" else f"{job.status}, stopping at its next batch"
        click.echo(f"Cancel requested: job {job.id} is {state}", err=True)
    else:
        click.echo(f"Job {job.id} keeps going; see it with: trainer status {job.id}", err=True)


def conclude(job: Job) -> None:
    """After --wait: anything but success is a failure of the command (exit 1), said on stderr."""
    if job.succeeded:
        return
    if job.status == "failed":
        error = job.error or {}
        click.echo(f"Error: job {job.id} failed: {error.get('type', 'error')}: {error.get('message', '')}", err=True)
        if error.get("hint"):
            click.echo(f"Hint: {error['hint']}", err=True)
    else:
        click.echo(f"Error: job {job.id} was {job.status}", err=True)
    raise click.exceptions.Exit(EXIT_FAILED)


class EpochProgress:
    """A rich progress bar fed by ``Job.wait(on_update=…)``: state, epoch/epochs, last metrics, sparsity."""

    def __init__(self, console: Console, job: Job):
        metrics = TextColumn("{task.fields[metrics]}", table_column=Column(no_wrap=False, overflow="fold", ratio=1))
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            TextColumn("epoch"),
            MofNCompleteColumn(),
            BarColumn(bar_width=12),
            metrics,
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.bar.add_task(phase(job), total=job.progress.get("epochs"), metrics="")

    def __enter__(self) -> EpochProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, job: Job) -> None:
        progress = job.progress
        self.bar.update(
            self.task,
            description=phase(job),
            total=progress.get("epochs"),
            completed=progress.get("epoch") or 0,
            metrics=metrics_line(job),
        )


def phase(job: Job) -> str:
    """'running' says little for a transfer job; its phase (frozen, fine_tune) says which half it is in."""
    current = job.progress.get("phase")
    if job.status == "running" and current not in (None, "train", "running"):
        return f"running ({current})"
    return job.status or ""


def metrics_line(job: Job) -> str:
    """The last finished epoch's loss, accuracy, val_accuracy and the current sparsity, as one line."""
    rows = job.data.get("history") or []
    last = rows[-1] if rows else {}
    parts = [
        f"{label} {fmt(last[key])}"
        for key, label in (("loss", "loss"), ("accuracy", "acc"), ("val_accuracy", "val_acc"))
        if last.get(key) is not None
    ]
    sparsity = job.progress.get("sparsity", last.get("sparsity"))
    if sparsity is not None:
        parts.append(f"sparsity {fmt(sparsity, 3)}")
    return "  ".join(parts)


# -- rendering ---------------------------------------------------------------------------------------


def fmt(value: object, digits: int = 4) -> str:
    """Numbers as people compare them: fixed decimals for metrics, thousands separators for counts."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def when(iso: str | None) -> str:
    """Server timestamps (ISO, UTC) in local time, to the second."""
    if not iso:
        return "–"
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def styled_status(status: str | None) -> Text:
    """None on a handle made with fetch=False: shown empty."""
    return Text(status or "", style=STATUS_STYLE.get(status or "", ""))


def show_job(s: Session, job: Job) -> None:
    if s.as_json:
        s.emit(job.data)
    else:
        s.out.print(job_view(job))


def job_view(job: Job) -> Group:
    """The summary grid, then the result tables once there is a result."""
    parts: list[Table | None] = [summary_grid(job)]
    if job.result:
        parts += [result_table(job.result), sizes_table(job.result), layers_table(job.result), inference_table(job.result)]
    return Group(*[part for part in parts if part is not None])


def summary_grid(job: Job) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    progress = job.progress
    rows = [
        ("job", job.id),
        ("name", job.name),
        ("status", styled_status(job.status)),
        ("progress", f"epoch {progress.get('epoch', 0)}/{progress.get('epochs', '?')}"),
        ("created", when(job.data.get("created_at"))),
        ("started", when(job.data.get("started_at"))),
        ("finished", when(job.data.get("finished_at"))),
        ("device", job.data.get("device")),
    ]
    if job.data.get("history"):
        rows.append(("last epoch", metrics_line(job)))
    if job.error:
        rows += [("error", f"{job.error.get('type')}: {job.error.get('message')}"), ("hint", job.error.get("hint"))]
    rows += [("warning", warning) for warning in job.data.get("warnings") or []]
    for key, value in rows:
        if value not in (None, ""):
            grid.add_row(key, value)
    return grid


def result_table(result: dict[str, Any]) -> Table:
    """Test metrics, sparsity actually reached, and parameter counts — the numbers a run is judged by."""
    table = Table(title="Result", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    for name, value in (result.get("test") or {}).items():
        table.add_row(f"test {name}", fmt(value))
    sparsity = result.get("sparsity") or {}
    if "overall" in sparsity:
        table.add_row("sparsity (pruned kernels)", fmt(sparsity["overall"], 3))
    params = result.get("params") or {}
    if params:
        table.add_row("parameters nonzero / total", f"{fmt(params.get('nonzero'))} / {fmt(params.get('total'))}")
    if "epochs_run" in result:
        table.add_row("epochs run", fmt(result["epochs_run"]))
    return table


def sizes_table(result: dict[str, Any]) -> Table | None:
    sizes = result.get("sizes") or {}
    if not sizes:
        return None
    table = Table(title="Sizes", title_justify="left")
    table.add_column("format")
    table.add_column("bytes", justify="right")
    table.add_column("gzip bytes", justify="right")
    for name, size in sizes.items():
        table.add_row(name, fmt(size.get("bytes")), fmt(size.get("gzip_bytes")))
    return table


def layers_table(result: dict[str, Any]) -> Table | None:
    layers = (result.get("sparsity") or {}).get("layers") or []
    if not layers:
        return None
    table = Table(title="Layers", title_justify="left")
    table.add_column("layer", no_wrap=True)
    for name in ("sparsity", "nonzero", "params"):
        table.add_column(name, justify="right")
    table.add_column("pruned")
    for layer in layers:
        table.add_row(
            layer.get("name"),
            fmt(layer.get("sparsity"), 3),
            fmt(layer.get("nonzero")),
            fmt(layer.get("params")),
            fmt(layer.get("pruned")),
        )
    return table


def byte_size(value: object) -> str:
    """Bytes as K or M (binary), 3 digits: file sizes and memory are compared by their order of magnitude."""
    if not isinstance(value, int):
        return "–"
    if value >= 1000 * 1024:
        return f"{value / (1024 * 1024):.3g}M"
    if value >= 1000:
        return f"{value / 1024:.3g}K"
    return f"{value}B"


def duration(ms: object) -> str:
    """Milliseconds as µs below 1 ms, 3 significant digits: a tiny model's call takes microseconds."""
    if not isinstance(ms, (int, float)):
        return "–"
    if ms < 0.9995:
        return f"{ms * 1000:.3g}µs"
    return f"{ms:.3g}ms" if ms < 999.5 else f"{ms / 1000:.3g}s"


def rate(per_second: object) -> str:
    """Samples per second as k or M, 3 digits."""
    if not isinstance(per_second, (int, float)):
        return "–"
    if per_second >= 999_500:
        return f"{per_second / 1e6:.3g}M"
    if per_second >= 999.5:
        return f"{per_second / 1e3:.3g}k"
    return f"{per_second:.3g}"


def inference_table(result: dict[str, Any]) -> Table | None:
    """The measured inference in 80 columns: each format of the model, then its untrained dense twin's (what a
    speed-up is relative to)."""
    report = result.get("inference")
    if not report:
        return None
    table = Table(
        title=f"Inference on {report.get('cpu')}, {report.get('cpu_count')} CPUs",
        title_justify="left",
        caption="batch-1: median/p90 of one sample per call, 1 thread; batch-256: samples/s with 1/all threads; "
        "speed-up: the dense twin's batch-1 median over the model's",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    table.add_column("format", no_wrap=True)
    for name in ("size", "gzip", "batch-1", "batch-256/s", "memory", "speed-up"):
        table.add_column(name, justify="right", no_wrap=True)
    speedup = report.get("speedup") or {}
    for twin, formats in ((False, report.get("model") or {}), (True, report.get("dense_twin") or {})):
        if twin and formats:
            table.add_section()
            table.add_row("dense twin:", style="dim")
        for name, entry in formats.items():
            one = entry.get("single_thread") or {}
            every = entry.get("all_threads") or {}
            batch1 = one.get("batch1") or {}
            table.add_row(
                name,
                byte_size(entry.get("bytes")),
                byte_size(entry.get("gzip_bytes")),
                f"{duration(batch1.get('median_ms'))}/{duration(batch1.get('p90_ms'))}",
                f"{rate(one.get('batch256_per_second'))}/{rate(every.get('batch256_per_second'))}",
                byte_size(entry.get("peak_memory_bytes")),
                "" if twin or name not in speedup else f"{speedup[name]:.2f}×",
                style="dim" if twin else None,
            )
    return table


def jobs_table(jobs: list[Job]) -> Table:
    """Fits 80 columns: fixed-width columns first, the id never wraps (it is what you copy), the name
    comes last and gives way."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("id", no_wrap=True, min_width=32)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("epoch", justify="right", no_wrap=True, min_width=5)
    table.add_column("acc", justify="right", no_wrap=True, min_width=6)
    table.add_column("created", no_wrap=True, min_width=11)
    table.add_column("name", overflow="ellipsis")
    for job in jobs:
        progress = job.progress
        accuracy = ((job.result or {}).get("test") or {}).get("accuracy")
        table.add_row(
            job.id,
            styled_status(job.status),
            f"{progress.get('epoch', 0)}/{progress.get('epochs', '?')}",
            fmt(accuracy),
            when(job.data.get("created_at"))[5:16],
            job.name,
        )
    return table


def history_table(rows: list[dict[str, Any]]) -> Table:
    """The usual columns any row has; ``phase`` and the learning rate only when they vary (transfer, schedules)."""
    present = [c for c in HISTORY_COLUMNS if any(c in row for row in rows)]
    present = [c for c in present if c not in VARYING_ONLY or len({row.get(c) for row in rows}) > 1]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for column in present:
        table.add_column(HISTORY_LABELS.get(column, column), justify="left" if column == "phase" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*[fmt(row.get(c), 6 if c == "learning_rate" else 4) for c in present])
    return table


def main() -> None:
    cli(prog_name="trainer")


if __name__ == "__main__":
    main()
