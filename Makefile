# The README's commands. Each does all set-up idempotently on a fresh Debian 12 host (as root).
PY      ?= /usr/bin/python3
VENV    := .venv
STAMP   := $(VENV)/.installed
EDR     := $(VENV)/bin/edr

.PHONY: run test setup host venv lint bench clean

setup: host venv

host:
	bash scripts/setup_host.sh

# --system-site-packages: bcc comes from apt (python3-bpfcc), not pip.
$(VENV)/bin/python:
	$(PY) -m venv --system-site-packages $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: setup
	$(EDR) run --console --config conf/config.toml

test: setup
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/python -m mypy
	$(VENV)/bin/python -m pytest -q

bench: setup
	$(VENV)/bin/python scripts/bench_pipeline.py
	$(VENV)/bin/python scripts/bench_sigma.py
	$(VENV)/bin/python scripts/bench_scan.py

clean:
	rm -rf $(VENV) logs cache state .pytest_cache
