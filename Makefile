# Two commands for a fresh clone:
#   make demo   set up .venv and run the main job (embed a WordNet corpus, store it, search it)
#   make test   set up .venv with every extra, lint, and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned to the CPU build, so nothing pulls gigabytes of CUDA packages.
TORCH := torch==2.13.0
TEST_EXTRAS := dev,fast,embeddings,bench,langchain,llamaindex,server,client,datalake,wgpu
PYTEST_ARGS ?= -m "not slow and not gpu"

.PHONY: demo test lint bench clean vulkan

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[embeddings,fast]'
	touch $@

$(VENV)/.test-installed: pyproject.toml requirements-test.txt | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[$(TEST_EXTRAS)]' -r requirements-test.txt
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	HF_HUB_OFFLINE=1 $(BIN)/python examples/demo.py

# Software Vulkan (lavapipe) lets the wgpu backend's tests run on machines without a GPU.
vulkan:
	@if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null) \
		|| echo "warning: could not install mesa-vulkan-drivers; wgpu tests will be skipped"; \
	else echo "note: no software Vulkan; wgpu tests will be skipped"; fi

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts

test: $(VENV)/.test-installed vulkan lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/bench_foundation.py
	$(BIN)/python benchmarks/benchmark_m2m.py --dataset wordnet-minilm

clean:
	rm -rf $(VENV) m2m_data .pytest_cache .ruff_cache .hypothesis
