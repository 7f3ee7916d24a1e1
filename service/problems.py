"""Every error leaves the API as application/problem+json (RFC 9457), mapped in this one place."""
from __future__ import annotations

import logging

from flask import Flask, Response, json
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from core.errors import TrainerError

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, errors: list | None = None, headers: dict | None = None) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return Response(json.dumps(body), status=status, mimetype=PROBLEM, headers=headers or {})


def _union_tags() -> frozenset[str]:
    """The ``type`` values of the recipe's tagged unions: pydantic puts them in ``loc``; the client never wrote them."""
    from typing import get_args

    from core import recipe

    tags = set()
    for union in (recipe.Layer, recipe.Optimizer, recipe.PruningSchedule):
        for member in get_args(get_args(union)[0]):
            tags.update(get_args(member.model_fields["type"].annotation))
    return frozenset(tags)


UNION_TAGS = _union_tags()
UNION_FIELDS = frozenset({"optimizer", "schedule"})


def pydantic_errors(exc: ValidationError) -> list[dict]:
    """``loc`` as the client wrote it, without the union tags and validator names pydantic inserts."""
    out = []
    for err in exc.errors(include_url=False):
        raw = err["loc"]
        loc = [
            p for i, p in enumerate(raw)
            if not (isinstance(p, str) and (
                "[" in p or "-" in p
                or (p in UNION_TAGS and i > 0 and (isinstance(raw[i - 1], int) or raw[i - 1] in UNION_FIELDS))
            ))
        ]
        out.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
    return out


def validation_problem(exc: ValidationError) -> Response:
    errors = pydantic_errors(exc)
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:10])
    return problem(422, "Invalid request", detail, errors)


def install(app: Flask) -> None:
    @app.errorhandler(TrainerError)
    def _trainer_error(exc: TrainerError):
        return problem(exc.status, exc.title, exc.detail, exc.errors, exc.headers)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError):
        return validation_problem(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        return problem(exc.code or 500, exc.name, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        from sqlalchemy.exc import InterfaceError, OperationalError

        if isinstance(exc, (OperationalError, InterfaceError)):
            log.warning("database unavailable: %s", exc)
            return problem(503, "Service unavailable", "the database cannot be reached; retry shortly",
                           headers={"Retry-After": "5"})
        log.exception("unhandled error")
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged")
