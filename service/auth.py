"""Who is asking: a Bearer token mapped to an owner, checked before every /v1 request.

Every job, dataset and model belongs to an owner; another owner gets 404 for it (the domain functions
filter by owner). Health checks and the API documentation need no token.
"""
from __future__ import annotations

import logging

from flask import Flask, g, request

from core import tokens
from core.errors import Unauthorized

log = logging.getLogger(__name__)
SINGLE_USER_OWNER = "default"
PUBLIC_PREFIXES = ("/healthz", "/readyz", "/docs", "/openapi.json", "/jobs/")  # pages fetch data with the token
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="trainer"'}


def current_owner() -> str:
    return g.owner


def install(app: Flask) -> None:
    from service.app import services

    settings = app.extensions["trainer"].settings
    tokens.env_tokens(settings)  # a malformed TRAINER_API_TOKENS fails at start, not at the first request
    if settings.single_user:
        log.warning("single-user mode: no API token is asked for and every request acts as owner %r "
                    "(unset TRAINER_SINGLE_USER and set TRAINER_API_TOKENS to require tokens)", SINGLE_USER_OWNER)

    @app.before_request
    def _authenticate():
        if request.path.startswith(PUBLIC_PREFIXES) or request.path == "/":
            return None
        if settings.single_user:
            g.owner = SINGLE_USER_OWNER
            return None
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send Authorization: Bearer <token>", headers=CHALLENGE)
        with services().db.session() as session:
            owner = tokens.owner_for(session, settings, token.strip())
        if owner is None:
            raise Unauthorized("that token is not valid", headers=CHALLENGE)
        g.owner = owner
        return None
