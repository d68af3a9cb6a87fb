# detector-al: every target makes what it needs; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip

.PHONY: setup demo test test-fast lint bench model clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -c "import torch, torchvision, ultralytics; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'ultralytics', ultralytics.__version__)"
	touch $(STAMP)

setup: $(STAMP)

## The main job on the embedded default: sample data, bootstrap model, ranked queue.
demo: $(STAMP)
	$(BIN)/detector-al demo

## The test suite (trains its own small model; no network).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

model: $(STAMP)
	$(BIN)/detector-al train sample_data/data.yaml --out models/bootstrap

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
