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
$BIN/gunicorn --bind "127.0.0.1:${PORT}" --workers 2 --threads 4 --access-logfile - \
    --graceful-timeout 10 'service.app:create_app()' &
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
