# Two commands on a fresh machine: `make pipeline` runs every asset, `make test` runs the tests.
# Both create the virtual environment from pyproject.toml first (once, and again when it changes).

PYTHON ?= python3
VENV ?= .venv
# A persistent Dagster instance for `pipeline` and `ui`, so runs, materializations and schedules
# survive between commands. The tests make their own instances.
DAGSTER_HOME ?= $(CURDIR)/.dagster

INSTALLED := $(VENV)/.installed

.PHONY: install instance browser pipeline test ui recsys

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

pipeline: $(INSTALLED) instance
	DAGSTER_HOME="$(DAGSTER_HOME)" $(VENV)/bin/dagster asset materialize -m recsys_pipeline.definitions --select '*'

test: $(INSTALLED) browser
	$(VENV)/bin/python -m pytest

# The `recsys` command from the project's environment, e.g. make recsys ARGS='similar "The Matrix"'
recsys: $(INSTALLED)
	$(VENV)/bin/recsys $(ARGS)

ui: $(INSTALLED) instance
	DAGSTER_HOME="$(DAGSTER_HOME)" $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000
