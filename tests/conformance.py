"""Every JSON response the tests receive, checked against the app's own ``/openapi.json``.

Flask's ``request_finished`` signal fires for every app in this process — the suite's, the ones a test builds
with ``create_app``, the live servers' — with the request still current, so the operation is known from the
matched URL rule. A body that does not fit the schema documented for its path, method, status and media type
is recorded here, and ``conftest``'s autouse fixture fails the test that received it.
"""

from __future__ import annotations

import json
import re

import jsonschema_rs
from flask import Flask, Response, request, request_finished

JSON_TYPES = ("application/json", "application/problem+json")
#: What a response off the document looked like: one line per response.
VIOLATIONS: list[str] = []
_validators: dict[tuple, object] = {}


def openapi_path(rule: str) -> str:
    """``/v1/jobs/<job_id>/plots/<name>.png`` → ``/v1/jobs/{job_id}/plots/{name}.png`` (converters dropped)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def documented_schema(doc: dict, path: str | None, method: str, status: int, media: str) -> dict | None:
    """The schema ``doc`` gives that response; a problem from outside any operation (an unknown path, a method
    not allowed) is held to the common Problem schema. None: the path is not in the document (pages, docs)."""
    if path is None:
        return {"$ref": "#/components/schemas/Problem"} if media == "application/problem+json" else None
    operation = doc["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return None
    response = operation["responses"].get(str(status))
    if response is None:
        return {"not": {}, "description": f"status {status} is not documented"}
    schema = response.get("content", {}).get(media, {}).get("schema")
    return schema if schema is not None else {"not": {}, "description": f"{media} is not documented"}


def violations(doc: dict, path: str | None, method: str, status: int, media: str, body) -> list[str]:
    """Why ``body`` does not fit the document ([] when it does, or when the document says nothing of it)."""
    schema = documented_schema(doc, path, method, status, media)
    if schema is None:
        return []
    key = (id(doc), path, method, status, media)
    validator = _validators.get(key)
    if validator is None:
        validator = _validators[key] = jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})
    return [f"{error.instance_path}: {error.message}" for error in validator.iter_errors(body)]


def _check(app: Flask, response: Response, **_) -> None:
    if response.mimetype not in JSON_TYPES or response.is_streamed or not hasattr(app, "api_doc"):
        return
    rule = request.url_rule
    path = openapi_path(rule.rule) if rule is not None else None
    body = json.loads(response.get_data())
    found = violations(app.api_doc, path, request.method, response.status_code, response.mimetype, body)
    if found:
        VIOLATIONS.append(
            f"{request.method} {request.path} → {response.status_code} {response.mimetype}: {'; '.join(found[:5])}"
        )


def install() -> None:
    """Check every app's responses from now on (blinker holds a weak reference, so ``_check`` stays global)."""
    request_finished.connect(_check)


def take() -> list[str]:
    found, VIOLATIONS[:] = list(VIOLATIONS), []
    return found
