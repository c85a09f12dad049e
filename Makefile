# mlrun — the two commands a new user needs:
#   make run    set everything up, then train recipes/summary.toml
#   make test   set everything up, then run the whole test suite
#   make test-fast   the same, without the tests marked slow (trainings in subprocesses, torchrun, pip)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The working torch/torchvision pair on this kind of machine; pyproject.toml declares ranges.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PLUGINS := $(wildcard plugins/*/pyproject.toml)
SYSTEM_FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: run test test-fast lint setup data bench bench-recipes clean

run: setup data
	$(BIN)/mlrun recipes/summary.toml

# Test processes (pytest-xdist): "auto" is one per CPU core. Trainings in tests use 1 thread each
# (train.threads), so N workers keep N cores busy without oversubscribing them.
TEST_WORKERS ?= auto

test: setup data lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# ruff (lint and format) and mypy, configured in pyproject.toml; part of `make test`, so CI runs them.
lint: setup
	$(BIN)/ruff check src tests plugins bench
	$(BIN)/ruff format --check src tests plugins bench
	$(BIN)/mypy

test-fast: setup data
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow"

setup: $(VENV)/.installed

# The distribution is torch-mlrun ("mlrun" on the package index is an unrelated project).
# A venv set up before the rename still lists this checkout as "mlrun": that entry goes first.
$(VENV)/.installed: pyproject.toml $(PLUGINS) Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip uninstall --quiet --disable-pip-version-check -y mlrun 2>/dev/null || true
	rm -rf src/mlrun.egg-info
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

# Fashion-MNIST cannot be downloaded everywhere: install Debian's copy when it is
# missing and we can (root with apt); otherwise mlrun falls back to torchvision's download.
data:
	@if [ -f "$(SYSTEM_FASHION_MNIST)/train-images-idx3-ubyte.gz" ]; then \
		echo "Fashion-MNIST: using $(SYSTEM_FASHION_MNIST)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST: no system copy; mlrun will look in its data folder, then download"; \
	fi

# The training overhead and feature rows, then image-folder training (decode-once cache vs
# ImageFolder + DataLoader) and sweep throughput (trials per hour with 1 and 2 workers).
bench: setup data
	$(BIN)/python bench/compare.py
	$(BIN)/python bench/image_folder.py
	$(BIN)/python bench/sweep.py

# Re-train every recipe and compare with the accuracy its header states (about 15 minutes on 2 idle cores).
bench-recipes: setup data
	$(BIN)/python bench/recipes.py

clean:
	rm -rf $(VENV) runs .pytest_cache
