# Two commands on a fresh machine: `make pipeline` runs every asset, `make test` runs the tests.
# Both create the virtual environment from pyproject.toml first (once, and again when it changes).

PYTHON ?= python3
VENV ?= .venv
# A persistent Dagster instance for `pipeline` and `ui`, so runs, materializations and schedules
# survive between commands. The tests make their own instances.
DAGSTER_HOME ?= $(CURDIR)/.dagster

INSTALLED := $(VENV)/.installed

.PHONY: install instance browser pipeline test ui

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $@

install: $(INSTALLED)

# The instance settings (pools, run limits) live in $DAGSTER_HOME/dagster.yaml; an edited copy is kept.
instance:
	mkdir -p "$(DAGSTER_HOME)"
	cp -n dagster.yaml "$(DAGSTER_HOME)/dagster.yaml" 2>/dev/null || true

# The UI test drives Debian's Chromium (playwright never downloads a browser here).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

pipeline: $(INSTALLED) instance
	DAGSTER_HOME="$(DAGSTER_HOME)" $(VENV)/bin/dagster asset materialize -m recsys_pipeline.definitions --select '*'

test: $(INSTALLED) browser
	$(VENV)/bin/python -m pytest

ui: $(INSTALLED) instance
	DAGSTER_HOME="$(DAGSTER_HOME)" $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000
