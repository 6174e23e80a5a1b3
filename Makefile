# Two commands on a fresh machine: `make pipeline` runs every asset, `make test` runs the tests.
# Both create the virtual environment from pyproject.toml first (once, and again when it changes).

PYTHON ?= python3
VENV ?= .venv
# A persistent Dagster instance, so runs, materializations and schedules survive between commands.
export DAGSTER_HOME ?= $(CURDIR)/.dagster

INSTALLED := $(VENV)/.installed

.PHONY: install pipeline test ui

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $@

install: $(INSTALLED)

pipeline: $(INSTALLED)
	mkdir -p "$(DAGSTER_HOME)"
	$(VENV)/bin/dagster asset materialize -m recsys_pipeline.definitions --select '*'

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest

ui: $(INSTALLED)
	mkdir -p "$(DAGSTER_HOME)"
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000
