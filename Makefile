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

.PHONY: install instance browser servers pipeline test test-fast ui recsys serve distributed-up distributed-down distributed-run

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

# The UI test (recsys_pipeline_tests/test_ui_browser.py) drives Debian's Chromium through playwright,
# which never downloads a browser here. When chromium is missing it is installed with apt-get, which
# needs root; otherwise this stops with what to install.
browser:
	@command -v chromium >/dev/null || { \
	  echo "make: the UI test needs Chromium; installing Debian's chromium package with apt-get"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "make: cannot install it here (needs root and apt-get): install Chromium so that 'chromium' is on PATH, then rerun" >&2; exit 1; \
	  fi; }

# PostgreSQL and Redis for the distributed deployment and its test, which start servers of their own
# (docs/deploy.md). When missing they are installed with apt-get, which needs root.
servers:
	@{ ls /usr/lib/postgresql/*/bin/pg_ctl && command -v redis-server; } >/dev/null 2>&1 || { \
	  echo "make: the distributed deployment needs PostgreSQL and Redis; installing Debian's postgresql and redis-server with apt-get"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server; \
	  else \
	    echo "make: cannot install them here (needs root and apt-get): install PostgreSQL and redis-server, then rerun" >&2; exit 1; \
	  fi; }

pipeline: $(INSTALLED) instance
	DAGSTER_HOME="$(DAGSTER_HOME)" $(VENV)/bin/dagster asset materialize -m recsys_pipeline.definitions --select '*'

# Every test: the real data, the distributed deployment (PostgreSQL, Redis) and the UI in Chromium included.
test: $(DISTRIBUTED) browser servers
	$(VENV)/bin/python -m pytest

# The edit loop: no real data, database, broker, browser or whole-graph subprocess runs (markers in pyproject.toml).
test-fast: $(INSTALLED)
	$(VENV)/bin/python -m pytest -m "not real_data and not distributed and not browser and not slow"

# The `recsys` command from the project's environment, e.g. make recsys ARGS='similar "The Matrix"'
recsys: $(INSTALLED)
	$(VENV)/bin/recsys $(ARGS)

# The HTTP recommendation service on the current release of $$RECSYS_DATA_DIR (default ./data), on
# 127.0.0.1:$(PORT), OpenAPI at /docs; it follows every release published or rolled back there.
PORT ?= 8000
SERVE_WORKERS ?= 1
serve: $(INSTALLED)
	$(VENV)/bin/recsys serve --port $(PORT) --workers $(SERVE_WORKERS)

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
