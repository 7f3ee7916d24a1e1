#!/usr/bin/env bash
# Starts the API (gunicorn) and one Celery worker; Ctrl-C (or TERM) stops both and waits for them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT="${PORT:-8000}"
mkdir -p var
echo "database: ${DATABASE_URL:-sqlite (var/trainer.sqlite)}   broker: ${CELERY_BROKER_URL:-sqla+sqlite (var/broker.sqlite)}"
$BIN/python -m core.migrate
if [ -z "${TRAINER_API_TOKENS:-}" ] && [ -z "${TRAINER_SINGLE_USER:-}" ]; then
    if [ -n "$($BIN/python -m core.tokens list --quiet)" ]; then
        echo "the database holds API tokens: they are required (python -m core.tokens list)"
    else
        # Local use: no tokens asked for (the API logs a warning saying so, and answers only localhost).
        export TRAINER_SINGLE_USER=1
    fi
fi

$BIN/celery -A worker.celery_app worker --loglevel INFO --concurrency 1 --hostname "worker@%h" &
WORKER=$!
# workers, threads (gthread, for ?wait= polling) and the metrics/logging hooks: service/gunicorn_conf.py;
# one log line per request comes from the app (service/request_log.py), with its request id
$BIN/gunicorn --config python:service.gunicorn_conf --bind "127.0.0.1:${PORT}" 'service.app:create_app()' &
API=$!

stop() {
    trap - INT TERM
    echo "stopping API ($API) and worker ($WORKER)..."
    kill -TERM "$API" "$WORKER" 2>/dev/null || true
    wait "$API" "$WORKER" 2>/dev/null || true
    echo "stopped."
}
trap 'stop; exit 0' INT TERM
echo "API on http://127.0.0.1:${PORT} (docs: /docs) — Ctrl-C to stop"
wait -n "$API" "$WORKER" || true
stop
