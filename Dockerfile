# One image for the api, the Celery worker and flower; docker-compose.yml picks
# the command of each service.
#
#   docker build -t keras-trainer .                          # CPU TensorFlow (default)
#   docker build --build-arg TF_VARIANT=gpu -t keras-trainer:gpu .   # tensorflow[and-cuda]
#
# Behind a TLS-intercepting proxy, give pip the proxy's CA (off by default;
# used only during the pip steps, never stored in a layer):
#   docker build --secret id=extra_ca,src=/path/to/extra-ca.pem .
#   podman build --secret id=extra_ca,src=/path/to/extra-ca.pem .
#
# Layers: dependencies are installed from pyproject.toml alone, before the
# source is copied, so a source change rebuilds only the last two layers.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

# cpu -> .[worker,monitor]; gpu -> .[worker,gpu,monitor] (tensorflow[and-cuda])
ARG TF_VARIANT=cpu

# PYTHONPATH=/app: the app is imported from /app, beside alembic.ini and
# migrations/ (core.settings.ROOT), not from the copy pip puts in site-packages.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    TRAINER_VAR_DIR=/app/var

# a writable home: gunicorn's control socket (~/.gunicorn), ~/.keras
RUN groupadd --system --gid 10001 trainer \
 && useradd --system --uid 10001 --gid trainer --home-dir /home/trainer --create-home \
        --shell /usr/sbin/nologin trainer \
 && python -m venv "$VIRTUAL_ENV"

WORKDIR /app

# 1) dependencies only: the lists in pyproject.toml ([build-system].requires,
#    [project].dependencies and the extras of TF_VARIANT). This layer is reused
#    until pyproject.toml or TF_VARIANT changes.
COPY pyproject.toml /tmp/deps/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=secret,id=extra_ca \
    set -eu; \
    case "$TF_VARIANT" in \
      cpu) extras=worker,monitor ;; \
      gpu) extras=worker,gpu,monitor ;; \
      *) echo "TF_VARIANT must be cpu or gpu, not '$TF_VARIANT'" >&2; exit 1 ;; \
    esac; \
    python -c 'import sys, tomllib; d = tomllib.load(open(sys.argv[1], "rb")); p = d["project"]; \
extras = [e for e in sys.argv[2].split(",") if e]; \
reqs = d["build-system"]["requires"] + p["dependencies"] + [r for e in extras for r in p["optional-dependencies"][e]]; \
print("\n".join(reqs))' /tmp/deps/pyproject.toml "$extras" > /tmp/deps/requirements.txt; \
    cat /tmp/deps/requirements.txt; \
    if [ -s /run/secrets/extra_ca ]; then \
      cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca > /tmp/deps/ca-bundle.pem; \
      export PIP_CERT=/tmp/deps/ca-bundle.pem; \
    fi; \
    pip install -r /tmp/deps/requirements.txt; \
    rm -rf /tmp/deps

# the built-in fashion_mnist: Debian's package puts its four IDX .gz files (30 MB) under
# /usr/share/datasets/fashion-mnist; nothing is downloaded at run time (after the
# dependency layer, so adding it did not invalidate that layer's cache)
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist=0.0~git20200523.55506a9-1 \
 && rm -rf /var/lib/apt/lists/*

# 2) the source; installed without dependencies (and without fetching a build
#    backend: setuptools came with the layer above).
COPY . /app
RUN pip install --no-deps --no-build-isolation --no-cache-dir /app \
 && rm -rf /app/build /app/*.egg-info \
 && mkdir -p /app/var && chown trainer:trainer /app/var

USER 10001:10001
EXPOSE 8000

# The api's liveness probe; compose overrides it for the worker and flower.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--access-logfile", "-", "service.app:create_app()"]
