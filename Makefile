# QMS: `make demo` runs the product on SQLite with demo data; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
# Production's own virtualenv, from requirements.txt alone: the suite runs the web, a capture
# worker and beat on it (tests/production), so a module only the development tools bring in
# cannot hide.
PROD_VENV := .venv-prod
PROD_STAMP := $(PROD_VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)

.PHONY: demo test lint format venv prod-venv compile clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

prod-venv: $(PROD_STAMP)

$(PROD_STAMP): requirements.txt
	test -x $(PROD_VENV)/bin/python || $(PYTHON) -m venv $(PROD_VENV)
	$(PROD_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(PROD_VENV)/.installed-*
	touch $@

# The project's own modules byte-compiled, as an install does (docs/deployment.md): each
# process the suite or the demo starts then skips compiling them (about 0.15 s a start),
# whether or not the environment lets Python write bytecode itself.
compile: venv
	$(PY) -m compileall -q -j 0 manage.py qms recorder extensions integrations

demo: venv compile
	DEBUG=1 $(PY) manage.py migrate --noinput
	DEBUG=1 $(PY) manage.py load_demo
	DEBUG=1 $(PY) manage.py runserver 127.0.0.1:8000

test: venv prod-venv compile
	QMS_PRODUCTION_PYTHON=$(CURDIR)/$(PROD_VENV)/bin/python $(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(PROD_VENV) var .pytest_cache .ruff_cache
