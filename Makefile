# vlmchallenge — `make help` lists the targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
ARGS    ?=

.DEFAULT_GOAL := help
.PHONY: help install browser prepare train test test-fast bench gpu-check docker-check lint format clean clean-data

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed browser ## Create .venv and install the package with dev tools (torch 2.14.1 pinned)

browser: ## Headless Chromium and its driver from Debian's packages, for the review page's browser tests
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "browser: no chromium here and no root apt-get; the browser tests skip (Debian: apt-get install chromium chromium-driver)"; fi

train: install ## Main job: synthetic data -> shards -> train -> test -> export, on CPU (ARGS="optim.lr=1e-3")
	$(BIN)/python -m vlmchallenge.train $(ARGS)

prepare: install ## Only data preparation: raw OpenPack (or synthetic) -> WebDataset shards
	$(BIN)/python -m vlmchallenge.prepare $(ARGS)

test: install ## Run the whole test suite, as CI does (synthetic data, tiny models; prints the 15 slowest tests)
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: install ## The inner loop: the suite without the tests marked slow or drill (under 2 min on 2 cores)
	$(BIN)/python -m pytest -q -m "not slow and not drill" $(ARGS)

bench: install ## Run the benchmarks in bench/ and print their tables
	$(BIN)/python bench/prepare.py $(ARGS)
	$(BIN)/python bench/train_step.py $(ARGS)
	$(BIN)/python bench/scoring.py $(ARGS)

gpu-check: install ## On a GPU: pytest -m gpu, VRAM, train step, annotate, serving, DDP (DRY_RUN=1: CPU)
	bench/gpu_check.sh

docker-check: ## Build the Docker image, serve an export in it, check /health, /predict, docker stop (skips without an engine)
	bench/docker_check.sh

lint: install ## ruff check + format check
	$(BIN)/ruff check vlmchallenge tests bench
	$(BIN)/ruff format --check vlmchallenge tests bench

format: install ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix vlmchallenge tests bench
	$(BIN)/ruff format vlmchallenge tests bench

clean: ## Remove caches and run outputs (keeps .venv and data/)
	rm -rf .pytest_cache .ruff_cache .hypothesis outputs/*/ && find . -name __pycache__ -prune -exec rm -rf {} +

clean-data: ## Remove generated data and shards (data/)
	rm -rf data
