"""Every error leaves the API as application/problem+json (RFC 9457), mapped in this one place."""
from __future__ import annotations

import logging

from flask import Flask, Response, json
from pydantic import BaseModel, Field, ValidationError
from werkzeug.exceptions import HTTPException

from core.errors import TrainerError
from service.representation import documented

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


class ProblemError(BaseModel):
    loc: list[str | int] = Field(description="Where in the request, as the client wrote it: keys and list indexes.")
    msg: str
    type: str | None = Field(None, description="pydantic's error type, for a field the schema refused.")


class Problem(BaseModel):
    """An error (RFC 9457): the body of every 4xx and 5xx, built by ``problem`` and nowhere else."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = Field(description="What was wrong and what to do, in words.")
    errors: list[ProblemError] | None = Field(None, description="Invalid requests: each field refused.")


def problem_response(description: str) -> dict:
    return documented(description, Problem, media=PROBLEM)


#: Documented on every operation: what any request may get back.
COMMON_RESPONSES = {
    400: problem_response("Malformed request (e.g. invalid JSON), or a Host single-user mode does not answer"),
    401: problem_response("Missing or invalid API token"),
    404: problem_response("No such resource for this owner"),
    405: problem_response("Method not allowed"),
    409: problem_response("Not possible in the resource's current state, or a conflict with stored data"),
    413: problem_response("Body too large"),
    415: problem_response("Unsupported media type"),
    422: problem_response("Invalid request: `errors` lists each field (types are strict; NUL is refused)"),
    429: problem_response("Too many queued jobs, or too many requests from this token this minute; see Retry-After"),
    500: problem_response("Internal error, or a stored file failed its sha256 check"),
    503: problem_response("Database or broker unavailable; retry after Retry-After"),
}


def problem(status: int, title: str, detail: str, errors: list | None = None, headers: dict | None = None) -> Response:
    body = Problem(title=title, status=status, detail=detail, errors=errors).model_dump(mode="json", exclude_none=True)
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
        if err["type"] == "nul_character":  # found by walking the raw input: its loc is already the client's
            out.append({"loc": list(raw), "msg": err["msg"], "type": err["type"]})
            continue
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
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        return problem(exc.code or 500, exc.name, exc.description or exc.name, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError

        if isinstance(exc, (OperationalError, InterfaceError)):
            log.warning("database unavailable: %s", exc)
            return problem(503, "Service unavailable", "the database cannot be reached; retry shortly",
                           headers={"Retry-After": "5"})
        # Validation should have refused the value; if the database still does, the client's input is the
        # cause. The detail is generic: the driver's message holds SQL, table and column names.
        if isinstance(exc, DataError):
            log.warning("database refused a value: %s", exc)
            return problem(422, "Invalid request", "a value could not be stored: it is too long for its field "
                           "or holds a character the database refuses (such as NUL)")
        if isinstance(exc, IntegrityError):
            log.warning("database integrity conflict: %s", exc)
            return problem(409, "Conflict", "the request conflicts with stored data (a duplicate, or something "
                           "it refers to has gone); read the resource again and retry")
        log.exception("unhandled error")
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged")


NOT_MODIFIED = {"description": "Unchanged since the ETag sent in If-None-Match"}
