"""Liveness and readiness."""
from __future__ import annotations

from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import text

from service.app import services

api = APIBlueprint("health", __name__, abp_tags=[Tag(name="health")])


@api.get("/healthz")
def healthz():
    """The process is up."""
    return {"status": "ok"}


@api.get("/readyz")
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
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503
