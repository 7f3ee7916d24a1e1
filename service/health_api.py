"""Liveness and readiness."""
from __future__ import annotations

from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import text

from service.app import services
from service.problems import COMMON_RESPONSES, body

api = APIBlueprint("health", __name__, abp_tags=[Tag(name="health")],
                   abp_responses={k: v for k, v in COMMON_RESPONSES.items() if k in (404, 405, 500)})


@api.get("/healthz", responses={200: body("The process is up")})
def healthz():
    """The process is up."""
    return {"status": "ok"}


@api.get("/readyz", responses={200: body("Ready"), 503: body("Not ready: which dependency is down")})
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
