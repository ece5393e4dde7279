# make demo: set up .venv and run the default study (studies/default.toml)
# make test: set up .venv with the test extras and run the test suite (all of it, as CI does)
# make check: the quick tier for a development loop (tests not marked slow, on every core: pytest-xdist)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test check setup setup-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

demo: setup
	$(BIN)/tune start --target latency,top1

test: setup-test
	$(BIN)/python -m pytest -q

check: setup-test
	$(BIN)/python -m pytest -q -m "not slow" -n auto

clean:
	rm -rf $(VENV) edgetune.db edgetune-artifacts
