# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install what they need; torch is pinned and installed first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

LINT_PATHS := $(wildcard src tests benchmarks examples)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[train,trl,plot,dev]"
	# verl on CPU: the package without its GPU stack, plus what the imported modules need
	$(PIP) install -q --no-deps verl==0.9.1
	$(PIP) install -q tensordict==0.15.3 codetiming==1.4.0 omegaconf==2.3.1 hydra-core==1.3.8 ray==2.60.0 orjson==3.13.0
	# math-verify after omegaconf: it accepts omegaconf's antlr4 4.9.3 (latex2sympy2_extended ships that parser)
	$(PIP) install -q "math-verify>=0.7"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m knapsack_rl.cli demo

lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy src/knapsack_rl/core

test: lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_allocate.py
	$(PY) benchmarks/bench_sim.py
	$(PY) benchmarks/bench_trainer.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
