"""Every error leaves the API as application/problem+json (RFC 9457), mapped in this one place.

``core.errors`` says what went wrong; ``PROBLEMS`` says how each class is sent (status, title, headers, and
the route that helps). Validation errors keep ``loc`` as the client wrote it, walked along the schema.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, json
from flask_openapi3.types import ResponseDict
from pydantic import BaseModel, Field, ValidationError
from werkzeug.exceptions import HTTPException

from core.errors import (
    Conflict,
    CorruptArtifact,
    DatasetError,
    DatasetTooLarge,
    IdempotencyMismatch,
    InvalidInput,
    LimitExceeded,
    MalformedRequest,
    ModelError,
    ModelRefused,
    ModelTooLarge,
    NotFound,
    PayloadTooLarge,
    RecipeError,
    StorageQuotaExceeded,
    TrainerError,
    Unauthorized,
    Unavailable,
    UnknownDataset,
    UnsupportedMediaType,
)
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


def problem_response(description: str) -> dict[str, Any]:
    return documented(description, Problem, media=PROBLEM)


#: Documented on every operation: what any request may get back.
COMMON_RESPONSES: ResponseDict = {
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


@dataclass(frozen=True)
class Kind:
    """How one class of domain error is sent: its status and title, fixed headers, and a route that helps."""

    status: int
    title: str
    see: str = ""  # appended to the detail (and each error's msg): the API's routes are named here, not in core
    headers: tuple[tuple[str, str], ...] = ()


#: Every domain error's status, in one table; a class not listed takes its nearest listed base's.
PROBLEMS: dict[type[TrainerError], Kind] = {
    TrainerError: Kind(500, "Internal error"),
    InvalidInput: Kind(422, "Invalid request"),
    MalformedRequest: Kind(400, "Bad request"),
    UnsupportedMediaType: Kind(415, "Unsupported media type"),
    RecipeError: Kind(422, "Invalid recipe"),
    UnknownDataset: Kind(422, "Invalid recipe", see="GET /v1/datasets lists them"),
    DatasetError: Kind(422, "Invalid dataset"),
    ModelError: Kind(422, "Invalid model"),
    ModelRefused: Kind(422, "Model refused", see="the layers and objects allowed are listed under POST /v1/models in /docs"),
    IdempotencyMismatch: Kind(422, "Idempotency key reused"),
    Unauthorized: Kind(401, "Unauthorized", headers=(("WWW-Authenticate", 'Bearer realm="trainer"'),)),
    NotFound: Kind(404, "Not found"),
    Conflict: Kind(409, "Conflict"),
    LimitExceeded: Kind(429, "Too many requests"),
    PayloadTooLarge: Kind(413, "Payload too large"),
    DatasetTooLarge: Kind(413, "Dataset too large"),
    ModelTooLarge: Kind(413, "Model too large"),
    StorageQuotaExceeded: Kind(
        413,
        "Storage quota exceeded",
        see="delete datasets (DELETE /v1/datasets/{id}) or finished jobs (DELETE /v1/jobs/{id}) to make room",
    ),
    Unavailable: Kind(503, "Service unavailable"),
    CorruptArtifact: Kind(500, "Corrupted artifact"),
}


def problem(status: int, title: str, detail: str, errors: list | None = None, headers: dict | None = None) -> Response:
    body = Problem(title=title, status=status, detail=detail, errors=errors).model_dump(mode="json", exclude_none=True)
    return Response(json.dumps(body), status=status, mimetype=PROBLEM, headers=headers or {})


def _client_loc(schema: Mapping[str, Any], loc: tuple[Any, ...], defs: dict[str, Any]) -> list | None:
    """``loc`` walked along the core schema that produced it, keeping what the client wrote.

    pydantic inserts a tagged union's tag (``"adam"``, ``"dense"``) and a plain union's member label
    (``"LeakyReLUActivation"``, ``"tagged-union[...]"``) into ``loc``; the schema says where, so every union
    is treated alike, however it is nested. None when ``loc`` does not fit ``schema`` (a union tries the next
    member)."""
    kind = schema["type"]
    if kind == "definitions":
        defs = {**defs, **{d["ref"]: d for d in schema["definitions"]}}
        return _client_loc(schema["schema"], loc, defs)
    if kind == "definition-ref":
        return _client_loc(defs[schema["schema_ref"]], loc, defs)
    if not loc:
        return []
    step = _STEPS.get(kind, _through_wrapper)
    return step(schema, loc, defs)


def _tagged_union(schema: Mapping[str, Any], loc: tuple[Any, ...], defs: dict[str, Any]) -> list | None:
    """``loc[0]`` is the tag pydantic inserted; the member it names holds the rest."""
    choice = schema["choices"].get(loc[0])
    return None if choice is None else _client_loc(choice, loc[1:], defs)


def _union(schema: Mapping[str, Any], loc: tuple[Any, ...], defs: dict[str, Any]) -> list | None:
    """``loc[0]`` is the label of the member that failed; the member that fits the rest owns it."""
    for choice in schema["choices"]:
        found = _client_loc(choice[0] if isinstance(choice, tuple) else choice, loc[1:], defs)
        if found is not None:
            return found
    return None


def _fields(schema: Mapping[str, Any], loc: tuple[Any, ...], defs: dict[str, Any]) -> list | None:
    head, rest = loc[0], loc[1:]
    fields = {
        f.get("validation_alias") if isinstance(f.get("validation_alias"), str) else name: f
        for name, f in schema["fields"].items()
    }
    if head not in fields:
        return None if rest else [head]  # an unknown (forbidden) field is named as sent
    found = _client_loc(fields[head]["schema"], rest, defs)
    return None if found is None else [head, *found]


def _item(schema: Mapping[str, Any], loc: tuple[Any, ...], defs: dict[str, Any]) -> list | None:
    """An item of a collection: an index, or a dict key (``[key]`` follows it when the key itself is wrong)."""
    head, rest = loc[0], loc[1:]
    if schema["type"] == "dict":
        if rest[:1] == ("[key]",):
            return [head]
        item = schema.get("values_schema")
    elif not isinstance(head, int):
        return None
    elif schema["type"] == "tuple":
        items, variadic = schema.get("items_schema", []), schema.get("variadic_item_index")
        item = items[min(head, variadic)] if variadic is not None else items[head] if head < len(items) else None
    else:
        item = schema.get("items_schema")
    found = [] if item is None and not rest else None if item is None else _client_loc(item, rest, defs)
    return None if found is None else [head, *found]


def _through_wrapper(schema: Mapping[str, Any], loc: tuple[Any, ...], defs: dict[str, Any]) -> list | None:
    """nullable, default, validators, model, lax-or-strict, json-or-python: ``loc`` goes on inside."""
    for inner in ("schema", "strict_schema", "lax_schema", "json_schema", "python_schema"):
        if isinstance(schema.get(inner), dict):
            found = _client_loc(schema[inner], loc, defs)
            if found is not None:
                return found
    return None


_STEPS = {
    "tagged-union": _tagged_union,
    "union": _union,
    "model-fields": _fields,
    "typed-dict": _fields,
    "list": _item,
    "set": _item,
    "frozenset": _item,
    "tuple": _item,
    "dict": _item,
}


def _schemas_of(title: str) -> list[Mapping[str, Any]]:
    """The core schemas of the models a ValidationError can be about (its title is the model's name)."""
    found: list[Mapping[str, Any]] = []
    stack: list[type[BaseModel]] = [BaseModel]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__name__ == title and getattr(cls, "__pydantic_complete__", False):
            found.append(cls.__pydantic_core_schema__)
    return found


def client_loc(title: str, raw: tuple) -> list:
    """Where the client put the error; without a schema that fits, only the members' labels are dropped."""
    for schema in _schemas_of(title):
        found = _client_loc(schema, tuple(raw), {})
        if found is not None:
            return found
    return [p for p in raw if not (isinstance(p, str) and ("[" in p or "-" in p))]


def pydantic_errors(exc: ValidationError) -> list[dict]:
    """``loc`` as the client wrote it, without the union tags and member labels pydantic inserts."""
    out: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        raw = err["loc"]
        if err["type"] == "nul_character":  # found by walking the raw input: its loc is already the client's
            out.append({"loc": list(raw), "msg": err["msg"], "type": err["type"]})
            continue
        out.append({"loc": client_loc(exc.title, raw), "msg": err["msg"], "type": err["type"]})
    return out


def validation_problem(exc: ValidationError) -> Response:
    errors = pydantic_errors(exc)
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:10])
    return problem(422, "Invalid request", detail, errors)


def trainer_problem(exc: TrainerError) -> Response:
    """The problem for a domain error: the first class in its MRO that ``PROBLEMS`` maps."""
    kind = next(PROBLEMS[cls] for cls in type(exc).__mro__ if cls in PROBLEMS)
    detail, errors = exc.detail, exc.errors
    if kind.see:
        detail = f"{detail}; {kind.see}"
        errors = errors and [{**e, "msg": f"{e['msg']}; {kind.see}"} for e in errors]
    headers = dict(kind.headers)
    retry_after_s = getattr(exc, "retry_after_s", None)
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return problem(kind.status, kind.title, detail, errors, headers)


def install(app: Flask) -> None:
    @app.errorhandler(TrainerError)
    def _trainer_error(exc: TrainerError):
        return trainer_problem(exc)

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
            return trainer_problem(Unavailable("the database cannot be reached; retry shortly", retry_after_s=5))
        # Validation should have refused the value; if the database still does, the client's input is the
        # cause. The detail is generic: the driver's message holds SQL, table and column names.
        if isinstance(exc, DataError):
            log.warning("database refused a value: %s", exc)
            return problem(
                422,
                "Invalid request",
                "a value could not be stored: it is too long for its field "
                "or holds a character the database refuses (such as NUL)",
            )
        if isinstance(exc, IntegrityError):
            log.warning("database integrity conflict: %s", exc)
            return problem(
                409,
                "Conflict",
                "the request conflicts with stored data (a duplicate, or something "
                "it refers to has gone); read the resource again and retry",
            )
        log.exception("unhandled error")
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged")


NOT_MODIFIED = {"description": "Unchanged since the ETag sent in If-None-Match"}
