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
BUNDLE_PACKAGES ?= snakemake==9.27.1 snakemake-executor-plugin-slurm==2.8.0 pydantic==2.14.4

.PHONY: run run-full test lint format bundle benchmark-default clean

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

clean:
	rm -rf .snakemake results report logs
