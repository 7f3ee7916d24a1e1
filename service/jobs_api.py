"""/v1/jobs: submit, read, list, cancel, delete, download. Each view parses, calls core, shapes."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Annotated, Literal

from flask import Response, json, request, stream_with_context
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, BeforeValidator, Field

from core import admission, artifacts, job_state, jobs
from core.errors import Conflict, MalformedRequest, NotFound
from core.job_watch import MAX_WAIT_S
from core.layers import Strict
from core.models import JobStatus
from core.queue import dispatch
from core.recipe import ExportFormat, Recipe
from core.results import PlotName
from service.auth import current_owner
from service.extensions import services
from service.problems import COMMON_RESPONSES, NOT_MODIFIED
from service.representation import (
    Diagnostics,
    History,
    Job,
    JobList,
    diagnostics_body,
    documented,
    history_body,
    history_csv,
    job_body,
    job_list_body,
    png,
)

api = APIBlueprint(
    "jobs",
    __name__,
    url_prefix="/v1/jobs",
    abp_tags=[Tag(name="jobs")],
    abp_security=[{"bearer": []}],
    abp_responses=COMMON_RESPONSES,
)


class JobPath(BaseModel):
    job_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="The id returned by POST /v1/jobs.")


def _decimal(value):
    """A query string holds text: an integer is its decimal digits, nothing looser (" 2", "2.0", "1_0")."""
    return int(value) if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value) else value


#: An integer query parameter; the query models are ``Strict`` (unknown parameters, NUL, other types refused).
QueryInt = Annotated[int, BeforeValidator(_decimal)]


class Query(Strict):
    """A query string's model. flask-openapi3 asks it for its JSON schema on every request (to find list fields),
    which pydantic builds anew each time — a fifth of a job poll's time; a class's schema never changes, so the
    plain call is answered from the first one (OpenAPI's calls pass arguments and are not cached)."""

    @classmethod
    def model_json_schema(cls, *args, **kwargs):
        if args or kwargs:
            return super().model_json_schema(*args, **kwargs)
        if cls not in _PLAIN_SCHEMAS:
            _PLAIN_SCHEMAS[cls] = super().model_json_schema()
        return _PLAIN_SCHEMAS[cls]


_PLAIN_SCHEMAS: dict[type, dict] = {}


class ListQuery(Query):
    status: JobStatus | None = Field(None, strict=False)  # a query string is text: "queued" names the member
    limit: QueryInt = Field(20, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200)


class JobQuery(Query):
    wait: QueryInt = Field(
        0,
        ge=0,
        le=MAX_WAIT_S,
        description="With If-None-Match: hold the request until the job changes (200) or this many seconds pass (304).",
    )


class ModelQuery(Query):
    format: ExportFormat = "h5"


class HistoryQuery(Query):
    format: Literal["json", "csv"] = "json"


@api.post("", responses={202: documented("The job, queued (or the one this Idempotency-Key made)", Job)})
def submit(body: Recipe):
    """Validate a recipe, store the job as queued, and send its id to the workers."""
    svc = services()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise MalformedRequest("an Idempotency-Key is 1 to 255 characters")
    with svc.db.session() as session:
        job, created = admission.submit(
            session, body, current_owner(), svc.settings, key, hashlib.sha256(request.get_data()).hexdigest()
        )
    if created:
        dispatch(svc.celery, job.id)  # if the broker is down the job stays queued; the reconciler re-sends it
    response = _job_response(job.id, status=202)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return response


@api.get("", responses={200: documented("A page of jobs, newest first", JobList)})
def list_jobs(query: ListQuery):
    """Newest first; follow ``next_cursor`` for the next page."""
    svc = services()
    with svc.db.session() as session:
        rows, cursor = jobs.page(session, current_owner(), query.status and query.status.value, query.limit, query.cursor)
        return job_list_body(rows, cursor)


@api.get("/<job_id>", responses={200: documented("The job", Job), 304: NOT_MODIFIED})
def get_job(path: JobPath, query: JobQuery):
    """The job with its history so far; send If-None-Match with the ETag to poll cheaply, and ``?wait=N`` to be
    answered the moment it changes (or 304 after N seconds) — one request per change."""
    return _job_response(path.job_id, wait=query.wait)


def _job_response(job_id: str, status: int = 200, wait: int = 0) -> Response:
    svc = services()
    with svc.db.session() as session:
        version = jobs.version(session, job_id, current_owner())  # one indexed column; the owner check, never cached
    if status == 200 and request.if_none_match and request.if_none_match.contains_weak(f"{job_id}-{version}"):
        # held with no database connection (core.job_watch) until the version moves past the client's (the job is
        # then sent as it is now; 404 if it was deleted meanwhile), or 304 after ``wait`` s
        changed = svc.watch.wait(job_id, version, wait) if wait else None
        if changed is None:
            return Response(status=304, headers={"ETag": f'"{job_id}-{version}"'})
        version = changed

    # every client woken by the same change asks for the same version: built once (service.job_bodies)

    def build() -> tuple[int, bytes]:
        with svc.db.session() as session:
            job = jobs.get_any(session, job_id)
            body = job_body(job, jobs.history(session, job_id), jobs.model_artifacts(session, job_id))
            return job.version, json.dumps(body).encode()

    version, body = svc.job_bodies.get(job_id, version, build)
    response = Response(body, status=status, mimetype="application/json")
    response.headers["ETag"] = f'"{job_id}-{version}"'
    response.headers["Cache-Control"] = "no-cache"
    return response


def api_json(body, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


@api.post("/<job_id>/cancel", responses={202: documented("The job, cancelled or asked to stop", Job)})
def cancel_job(path: JobPath):
    """Queued: cancelled at once. Running: stops at the next batch boundary. Finished: 409."""
    svc = services()
    with svc.db.session() as session:
        job_state.cancel(session, path.job_id, current_owner())
    return _job_response(path.job_id, status=202)


@api.post("/<job_id>/pin", responses={200: documented("The job, pinned", Job)})
def pin_job(path: JobPath):
    """Kept by retention (TRAINER_RETENTION_DAYS) however old it gets, until unpinned."""
    with services().db.session() as session:
        jobs.pin(session, path.job_id, current_owner(), True)
    return _job_response(path.job_id)


@api.delete("/<job_id>/pin", responses={200: documented("The job, no longer pinned", Job)})
def unpin_job(path: JobPath):
    """Retention may delete it again once it is older than TRAINER_RETENTION_DAYS."""
    with services().db.session() as session:
        jobs.pin(session, path.job_id, current_owner(), False)
    return _job_response(path.job_id)


@api.delete("/<job_id>", responses={204: None})
def delete_job(path: JobPath):
    """A finished job goes with its artifacts, history and logs."""
    svc = services()
    with svc.db.session() as session:
        jobs.remove(session, path.job_id, current_owner())
    return Response(status=204)


@api.get(
    "/<job_id>/model",
    responses={
        200: documented("The model file", media="application/octet-stream", schema={"type": "string", "format": "binary"}),
        304: NOT_MODIFIED,
    },
)
def download_model(path: JobPath, query: ModelQuery):
    """The trained model, pruning wrappers stripped, streamed from the database with its sha256."""
    svc = services()
    with svc.db.session() as session:
        job = jobs.get(session, path.job_id, current_owner())
        if job.status != JobStatus.SUCCEEDED.value:
            raise Conflict(f"job {job.id} is {job.status}; the model exists once it has succeeded")
        artifact = jobs.model_artifacts(session, job.id).get(query.format)
        if artifact is None:
            raise NotFound(
                f"job {job.id} was not exported as {query.format!r}; its recipe's export.formats were "
                f"{job.recipe['export']['formats']}"
            )
    headers = {
        "Content-Length": str(artifact.size),
        "Content-Disposition": f'attachment; filename="{artifact.filename}"',
        "ETag": f'"{artifact.sha256}"',
        "X-Checksum-Sha256": artifact.sha256,
        "Digest": "sha-256=" + base64.b64encode(bytes.fromhex(artifact.sha256)).decode(),
    }
    if request.if_none_match.contains(artifact.sha256):
        return Response(status=304, headers={"ETag": headers["ETag"]})
    return Response(
        stream_with_context(artifacts.stream(svc.db, artifact)),
        mimetype="application/octet-stream",
        headers=headers,
        direct_passthrough=True,
    )


class PlotPath(JobPath):
    name: PlotName


@api.get(
    "/<job_id>/plots/<name>.png",
    responses={200: documented("The picture", media="image/png", schema={"type": "string", "format": "binary"})},
)
def get_plot(path: PlotPath):
    """Drawn by the worker when the job ends: curves, sparsity vs the schedule, per-layer sparsity, weights."""
    svc = services()
    with svc.db.session() as session:
        jobs.get(session, path.job_id, current_owner())
        artifact = jobs.plot_artifacts(session, path.job_id).get(path.name)
    if artifact is None:
        raise NotFound(f"job {path.job_id} has no {path.name} plot (plots are drawn when a job succeeds)")
    return png(svc.db, artifact)


@api.get(
    "/<job_id>/history",
    responses={200: documented("One row per finished epoch", History, also={"text/csv": {"type": "string"}})},
)
def get_history(path: JobPath, query: HistoryQuery):
    """One row per finished epoch, as JSON or CSV."""
    svc = services()
    with svc.db.session() as session:
        jobs.get(session, path.job_id, current_owner())
        rows = jobs.history(session, path.job_id)
    if query.format == "csv":
        return Response(
            history_csv(rows),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{path.job_id}-history.csv"'},
        )
    return history_body(path.job_id, rows)


@api.get("/<job_id>/diagnostics", responses={200: documented("Per epoch and layer figures", Diagnostics)})
def get_diagnostics(path: JobPath):
    """Per epoch and layer: mean |gradient| of the loss w.r.t. the kernel, and the share of saturated outputs."""
    svc = services()
    with svc.db.session() as session:
        jobs.get(session, path.job_id, current_owner())
        rows = jobs.diagnostics(session, path.job_id)
    return diagnostics_body(path.job_id, rows)


@api.get("/<job_id>/logs", responses={200: documented("Log lines", media="text/plain", schema={"type": "string"})})
def get_logs(path: JobPath):
    """The job's own log lines from the worker, growing while it runs (a failure's traceback is here)."""
    svc = services()
    with svc.db.session() as session:
        jobs.get(session, path.job_id, current_owner())
        lines = [f"{ln.at.isoformat()} {ln.level} {ln.message}" for ln in jobs.logs(session, path.job_id)]
    return Response("\n".join(lines) + ("\n" if lines else ""), mimetype="text/plain")
