"""Liveness and readiness."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import text

from service.extensions import services
from service.problems import COMMON_RESPONSES
from service.representation import Health, Readiness, documented

# 400: single-user mode's Host check runs before every route, these too. 422 never happens here; documented so
# flask-openapi3 does not add its own 422 model, which this API never sends.
api = APIBlueprint(
    "health",
    __name__,
    abp_tags=[Tag(name="health")],
    abp_responses={k: v for k, v in COMMON_RESPONSES.items() if k in (400, 404, 405, 422, 500)},
)


@api.get("/healthz", responses={200: documented("The process is up", Health)})
def healthz():
    """The process is up."""
    return Health(status="ok").model_dump(mode="json")


@api.get(
    "/readyz",
    responses={200: documented("Ready", Readiness), 503: documented("Not ready: which dependency is down", Readiness)},
)
def readyz():
    """The database and the broker can be reached; 503 otherwise."""
    svc = services()
    checks = {}
    try:
        with svc.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure to connect means not ready
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        with svc.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks).model_dump(mode="json")
    return body, 200 if ready else 503
