"""A bare Flask app, served by the same gunicorn flags as the service, as the floor to compare against.

``gunicorn 'bench.bare_app:create_app()'``: ``GET /const`` is a constant JSON body, ``GET /file`` is
``send_file`` of the path in ``BENCH_FILE`` (local disk), ``GET /healthz`` says it is up.
"""

from __future__ import annotations

import os

from flask import Flask, Response, json, send_file

CONST = {"id": "0" * 32, "status": "succeeded", "progress": {"epoch": 30, "epochs": 30}, "history": []}


def create_app() -> Flask:
    app = Flask(__name__)
    body = json.dumps(CONST)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/const")
    def const():
        return Response(body, mimetype="application/json")

    @app.get("/file")
    def file():
        return send_file(os.environ["BENCH_FILE"], mimetype="application/octet-stream", as_attachment=True)

    return app
