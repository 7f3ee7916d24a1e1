"""Who is asking: a Bearer token mapped to an owner, checked before every /v1 request.

Every job, dataset and model belongs to an owner; another owner gets 404 for it (the domain functions
filter by owner). Health checks and the API documentation need no token. A token is looked up on every
request, so a revoked or expired one is refused at its next request; each token has a request budget per
minute (``service/rate_limit.py``).

Single-user mode asks for no token, so anything that can reach the port acts as its owner; it answers only
requests whose ``Host`` is one of ``TRAINER_ALLOWED_HOSTS``, so a web page whose domain was rebound to
127.0.0.1 (DNS rebinding) cannot drive it from the user's browser.
"""

from __future__ import annotations

import logging

from flask import Flask, g, request
from sqlalchemy.exc import SQLAlchemyError

from core import log_context, tokens
from core.db import Database
from core.errors import MalformedRequest, Unauthorized
from core.settings import ConfigError, Settings
from service import rate_limit
from service.extensions import services

log = logging.getLogger(__name__)
SINGLE_USER_OWNER = "default"
# pages fetch data with the token; /metrics asks for its own (service/metrics.py)
PUBLIC_PREFIXES = ("/healthz", "/readyz", "/docs", "/openapi.json", "/jobs/", "/metrics")
HOW_TO_CREATE = (
    "create one with `python -m core.tokens create OWNER` (in the compose stack: "
    "`docker compose exec api python -m core.tokens create OWNER`) or set TRAINER_API_TOKENS=token:owner "
    "(in .env for compose)"
)


def current_owner() -> str:
    return g.owner


def host_name(host: str) -> str:
    """``Host`` without its port: ``localhost:8000`` → ``localhost``, ``[::1]:8000`` → ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_hosts(settings: Settings) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in settings.allowed_hosts.split(",") if h.strip())


def install(app: Flask) -> None:
    settings = services(app).settings
    tokens.env_tokens(settings)  # a malformed TRAINER_API_TOKENS fails at start, not at the first request
    _check_at_start(settings, services(app).db)
    hosts = allowed_hosts(settings)
    limiter = rate_limit.make_limiter(settings)

    @app.before_request
    def _authenticate():
        if settings.single_user:
            if "*" not in hosts and host_name(request.host) not in hosts:
                raise MalformedRequest(
                    f"this single-user server answers only to the hosts in "
                    f"TRAINER_ALLOWED_HOSTS ({settings.allowed_hosts}), not {request.host!r}"
                )
            g.owner = SINGLE_USER_OWNER
            log_context.bind(owner=g.owner)
            return None
        if request.path.startswith(PUBLIC_PREFIXES) or request.path == "/":
            return None
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send Authorization: Bearer <token>")
        with services().db.session() as session:
            caller = tokens.identify(session, settings, token.strip())
            rate_limit.check(limiter, settings.rate_limit_per_minute, session, caller.token_sha256)
        g.owner = caller.owner
        log_context.bind(owner=g.owner)
        return None


def _check_at_start(settings: Settings, db: Database) -> None:
    """Refuse single-user mode over a database that holds tokens; say how to make a token when there is none."""
    try:
        with db.session() as session:
            in_db = tokens.live_in_database(session)
    except SQLAlchemyError as exc:  # not migrated yet, or the database is down: the requests will say so
        log.warning("could not count the API tokens in the database: %s", str(exc).splitlines()[0])
        in_db = None
    if settings.single_user:
        if in_db:
            raise ConfigError(
                f"TRAINER_SINGLE_USER is set but the database holds {in_db} live API token(s): "
                "single-user mode would let anyone in without one. Unset TRAINER_SINGLE_USER, or "
                "revoke them (python -m core.tokens list / revoke ID)"
            )
        log.warning(
            "single-user mode: no API token is asked for and every request acts as owner %r; only "
            "Host %s is answered (unset TRAINER_SINGLE_USER and set TRAINER_API_TOKENS to require tokens)",
            SINGLE_USER_OWNER,
            settings.allowed_hosts,
        )
    elif not tokens.env_tokens(settings) and in_db == 0:
        log.error("no API token is configured: every /v1 request is refused with 401 until you %s", HOW_TO_CREATE)
