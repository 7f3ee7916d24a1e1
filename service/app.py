"""The HTTP API: an application factory over the job and dataset domain in ``core``.

This process never imports TensorFlow (about 4 s and 700 MB); it validates, stores and dispatches.
"""

from __future__ import annotations

from flask import Request, redirect, request
from flask.json.provider import DefaultJSONProvider
from flask_openapi3 import Info, OpenAPI
from flask_openapi3.models import Schema
from werkzeug.exceptions import RequestEntityTooLarge

from core import log_context
from core.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType
from core.settings import Settings, load_settings
from service import auth, extensions, metrics, problems, representation, request_log
from service.datasets_api import api as datasets_api
from service.experiments_api import api as experiments_api
from service.extensions import services
from service.health_api import api as health_api
from service.jobs_api import api as jobs_api
from service.models_api import api as models_api
from service.pages import pages
from service.usage_api import api as usage_api

__all__ = ["create_app", "services"]
#: Room in a model upload's body for the multipart boundaries and part headers around the file.
MULTIPART_ENVELOPE_BYTES = 64 * 1024


def create_app(settings: Settings | None = None) -> OpenAPI:
    settings = settings or load_settings()
    log_context.configure(settings)
    app = OpenAPI(
        __name__,
        info=Info(
            title="Keras training service",
            version="1.0.0",
            description="Submit a training recipe; poll the job; download the sparse model.",
        ),
        doc_prefix="/docs",
        doc_url="/openapi.json",
        validation_error_status=422,
        validation_error_callback=problems.validation_problem,
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        responses=problems.COMMON_RESPONSES,
    )
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    if isinstance(app.json, DefaultJSONProvider):
        app.json.sort_keys = False  # fields in the models' order
    extensions.init_app(app, settings)

    problems.install(app)
    request_log.install(app)  # before auth: a refused request's lines carry its id too
    metrics.install(app)
    auth.install(app)
    _install_body_checks(app, settings)

    for api in (jobs_api, datasets_api, experiments_api, health_api, usage_api, models_api):
        app.register_api(api)
    app.register_blueprint(pages)
    # the response models' schemas; a request model's own (validation) schema wins where both name one model
    for name, schema in representation.SCHEMAS.items():
        app.components_schemas.setdefault(name, Schema(**schema))

    @app.get("/openapi.json", doc_ui=False)
    def openapi_json():
        return app.api_doc

    @app.get("/docs", doc_ui=False)
    def docs():
        return redirect("/docs/swagger")

    return app


class TrainerRequest(Request):
    """JSON that does not parse is the API's own 400 problem, naming the parser's complaint."""

    def on_json_loading_failed(self, e: ValueError | None):
        if e is None:
            raise UnsupportedMediaType(f"send JSON with Content-Type: application/json, not {self.mimetype!r}")
        raise MalformedRequest(f"the body is not valid JSON: {e}")


def _install_body_checks(app: OpenAPI, settings: Settings) -> None:
    """A body is read up to ``max_request_bytes`` counted on the bytes actually read (werkzeug's limited stream:
    a chunked body without Content-Length is cut there too, nothing past it is read) and parsed once — werkzeug
    caches ``get_json``, and that cached object is what flask-openapi3 validates. Malformed JSON is a 400 and a
    wrong media type a 415, before any schema validation runs. Dataset uploads keep the larger MAX_CONTENT_LENGTH;
    model uploads read up to ``max_model_bytes`` (plus the multipart envelope), also counted on the bytes read."""
    app.request_class = TrainerRequest

    @app.before_request
    def _check_body():
        if request.method not in ("POST", "PUT", "PATCH") or request.path.startswith("/v1/datasets"):
            return None
        if request.path.startswith("/v1/models"):
            request.max_content_length = settings.max_model_bytes + MULTIPART_ENVELOPE_BYTES
            return None
        too_large = PayloadTooLarge(
            f"the request body is over {settings.max_request_bytes:,} bytes (TRAINER_MAX_REQUEST_BYTES)"
        )
        # werkzeug stops reading a stream at the maximum and returns what it has, so one byte more is allowed in
        # and then tells an over-limit body from one exactly at the limit
        request.max_content_length = settings.max_request_bytes + 1
        try:
            data = request.get_data(cache=True)
        except RequestEntityTooLarge:
            raise too_large from None
        if len(data) > settings.max_request_bytes:
            raise too_large
        if not data:
            return None
        if request.mimetype != "application/json":
            raise UnsupportedMediaType(f"send JSON with Content-Type: application/json, not {request.mimetype!r}")
        try:
            request.get_json(force=True)
        except RecursionError:
            raise MalformedRequest("the body is nested too deeply to be a recipe") from None
        return None
