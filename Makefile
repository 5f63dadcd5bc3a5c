# The two commands: `make demo` (the embedded tiny end-to-end demo) and `make test`.
# Both build .venv from the project's files alone: the CPU torch 2.13.0 first (a bare `torch` would pull a
# multi-GB CUDA build), then the project with its test extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: venv demo test lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: venv
	$(BIN)/tinyhistory demo --out $(DEMO_OUT)

lint: venv
	$(BIN)/ruff check src tests scripts benchmarks

test: venv lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
