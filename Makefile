# Two commands on a fresh machine: `make pipeline` runs every asset, `make test` runs the tests.
# Both create the virtual environment from pyproject.toml first (once, and again when it changes).

PYTHON ?= python3
VENV ?= .venv
# A persistent Dagster instance for `pipeline` and `ui`, so runs, materializations and schedules
# survive between commands. The tests make their own instances.
DAGSTER_HOME ?= $(CURDIR)/.dagster

INSTALLED := $(VENV)/.installed
# The optional `distributed` extra (dagster-postgres, dagster-celery): the deployment of docs/deploy.md and its test.
DISTRIBUTED := $(VENV)/.distributed
# Where the distributed deployment keeps PostgreSQL, Redis, its Dagster home, logs and artifacts.
DISTRIBUTED_ROOT ?= $(CURDIR)/.distributed
WORKERS ?= 2
DEPLOYMENT = $(VENV)/bin/python -m recsys_pipeline.deployment --root "$(DISTRIBUTED_ROOT)" --workers $(WORKERS)

.PHONY: install instance browser servers pipeline test ui distributed-up distributed-down distributed-run

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $@

install: $(INSTALLED)

$(DISTRIBUTED): $(INSTALLED)
	$(VENV)/bin/pip install --quiet -e ".[dev,distributed]"
	touch $@

# The instance settings (pools, run limits) live in $DAGSTER_HOME/dagster.yaml; an edited copy is kept.
instance:
	mkdir -p "$(DAGSTER_HOME)"
	cp -n dagster.yaml "$(DAGSTER_HOME)/dagster.yaml" 2>/dev/null || true

# The UI test drives Debian's Chromium (playwright never downloads a browser here).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# PostgreSQL and Redis from Debian when missing; the deployment and its test start their own servers.
servers:
	{ ls /usr/lib/postgresql/*/bin/pg_ctl && command -v redis-server; } >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server; }

pipeline: $(INSTALLED) instance
	DAGSTER_HOME="$(DAGSTER_HOME)" $(VENV)/bin/dagster asset materialize -m recsys_pipeline.definitions --select '*'

test: $(DISTRIBUTED) browser servers
	$(VENV)/bin/python -m pytest

ui: $(INSTALLED) instance
	DAGSTER_HOME="$(DAGSTER_HOME)" $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The multi-process deployment (docs/deploy.md): PostgreSQL instance, Celery workers on Redis, daemon, webserver.
distributed-up: $(DISTRIBUTED) servers
	$(DEPLOYMENT) up

distributed-down: $(DISTRIBUTED)
	$(DEPLOYMENT) down

# Up, the whole graph through the Celery workers, checks, down; the last line printed is one JSON object.
distributed-run: $(DISTRIBUTED) servers
	$(DEPLOYMENT) run
