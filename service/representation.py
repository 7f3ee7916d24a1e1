"""How a job looks on the wire."""
from __future__ import annotations

import csv
import io

from flask import Response, stream_with_context

from core import artifacts
from core.models import Artifact, Job


def iso(value):
    return value.isoformat() if value else None


PLOTS = ("curves", "sparsity", "layers", "weights")


def job_body(job: Job, history: list[dict] | None, models: dict[str, Artifact] | None = None) -> dict:
    base = f"/v1/jobs/{job.id}"
    progress = dict(job.progress or {})
    body = {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "recipe": job.recipe,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "attempt": job.attempt,
        "progress": progress,
        "history": history if history is not None else [],
        "result": job.result,
        "error": job.error,
        "warnings": progress.get("plan", {}).get("warnings", []),
        "device": job.device,
        "cancel_requested": job.cancel_requested,
        "links": {
            "self": base,
            "history": f"{base}/history",
            "logs": f"{base}/logs",
            "diagnostics": f"{base}/diagnostics",
            "cancel": f"{base}/cancel",
            "models": {fmt: f"{base}/model?format={fmt}" for fmt in (models or {})},
            "plots": {name: f"{base}/plots/{name}.png" for name in PLOTS} if job.status == "succeeded" else {},
        },
    }
    return body


def png(db, artifact: Artifact) -> Response:
    """A stored picture, streamed (and checked) like any artifact."""
    return Response(stream_with_context(artifacts.stream(db, artifact)), mimetype="image/png",
                    headers={"Content-Length": str(artifact.size), "Cache-Control": "max-age=3600"})


def history_csv(history: list[dict]) -> str:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()
