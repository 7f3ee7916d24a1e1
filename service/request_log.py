"""Each request's id and its one log line.

The id is the caller's ``X-Request-Id`` when it is sane (a proxy's or a client's), else a new one; it is sent
back in ``X-Request-Id``, is on every log line the request causes (``core.log_context``), and admission keeps it
in the job's plan so the worker's lines about that job carry it too. The line per request replaces gunicorn's
access log, which knows neither the request id nor the owner.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from core import log_context

log = logging.getLogger("trainer.http")
HEADER = "X-Request-Id"


def install(app: Flask) -> None:
    """Registered before authentication, so a refused request's lines carry its id too."""

    @app.before_request
    def _bind():
        log_context.clear()
        g.request_started = time.perf_counter()
        job_id = (request.view_args or {}).get("job_id")
        log_context.bind(request_id=log_context.request_id_from(request.headers.get(HEADER)), job_id=job_id)

    @app.after_request
    def _answer(response: Response) -> Response:
        request_id = log_context.current("request_id")
        if request_id:
            response.headers[HEADER] = request_id
            started = g.get("request_started")
            elapsed_ms = (time.perf_counter() - started) * 1000 if started else 0.0
            log.info("%s %s %d %.1f ms", request.method, request.path, response.status_code, elapsed_ms)
        return response

    @app.teardown_request
    def _clear(_exc: BaseException | None) -> None:
        log_context.clear()
