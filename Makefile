# The same commands locally and in CI. `make run` and `make test` set up a fresh machine first
# (idempotent: a second run only checks).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test check setup host venv images bench clean

run: setup                ## set up the machine and run Paddock with a demo runner
	$(VENV)/bin/paddock serve --demo

test: setup check         ## set up the machine, lint, type-check and run every test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

check: venv               ## ruff and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

setup: host venv images

host:                     ## Docker engine (+gVisor) and Redis, installed and started
	scripts/setup-host

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

images: host              ## runner images, built offline (no registry)
	runner_images/build

clean:
	rm -rf $(VENV) .paddock runner_images/.build
