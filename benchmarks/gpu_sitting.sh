#!/usr/bin/env bash
# One call of a GPU sitting: the GPU tests and/or Snakemake targets, and, when asked, a serving engine's offline
# bundle brought part by part (the machine has no network; one transfer carries at most 64 MiB).
#
#   [PYTEST_ARGS="-m gpu tests/gpu"] [BENCHMARK_ARGS="<script in benchmarks/> <its arguments>"] \
#     [SNAKEMAKE_ARGS="<targets and flags>"] [BUDGET_S=540] [WHL=.whl] [PARTS_FROM=.engines/bundle-vllm-gpu] \
#     [INSTALL_ENGINE=1] bash benchmarks/gpu_sitting.sh
#
# Each call: the project's wheels (.whl, `make bundle`) once per machine; every bundle part carried in this call
# kept with the earlier ones; with INSTALL_ENGINE=1 the engine installed from them once all are there
# (scripts/install_engine_bundle.sh); then pytest (its log appended call by call), then a benchmark script run
# from benchmarks/ (its output in $OUT/benchmark.log; what it writes under ../results/ is packed with the cells
# and stays for the next call: compiled_loop_variants.py --resume goes on from it), then Snakemake, the whole call
# within BUDGET_S seconds (each step gets what is left, so the results are packed before the device's own limit
# cuts the call off); logs and the packed results (state.tar.gz, also every 30 s) in $OUT. Results, parts and the
# engine stay on a machine kept warm between calls.
set -uo pipefail
OUT=${OUT:-/tmp/deploybench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
parts=/root/engine-bundle
start=$(date +%s)
# Seconds left of the call's budget.
left() { echo $(( ${BUDGET_S:-540} - ($(date +%s) - start) )); }
# True, with a line in the step's log $2, when too little budget is left to start step $1 with $3 s kept back for
# its ending (never `timeout 0`: that is no limit at all).
spent() {
    [ $(($(left) - ${3:-0})) -gt 10 ] && return 1
    echo "$1 not started: $(left) s left of BUDGET_S=${BUDGET_S:-540}" | tee -a "$2"
}

if ! python3 -c "import snakemake, pydantic, prometheus_client, httpx, sniffio" 2>/dev/null; then
    [ -d "${WHL:-.whl}" ] || { echo "no ${WHL:-.whl} and no snakemake: carry it (make bundle BUNDLE_DIR=.whl)"; exit 2; }
    python3 -m pip install -q --no-index --find-links "${WHL:-.whl}" snakemake==9.27.1 pydantic==2.14.4 \
        prometheus-client==0.26.0 httpx==0.29.0 sniffio==1.3.1 2>&1 | grep -v -i warning | tail -3
fi
python3 -c "import snakemake, deploybench.measure.phases, deploybench.measure.serving" || { echo "pre-flight: an import failed"; exit 2; }

mkdir -p "$parts"
for f in "${PARTS_FROM:-.engines/bundle-vllm-gpu}"/*; do [ -f "$f" ] && cp -u "$f" "$parts/"; done
echo "bundle parts here: $(cd "$parts" && ls | tr '\n' ' ')"
if [ -n "${INSTALL_ENGINE:-}" ] && [ ! -f .engines/vllm/deploybench-engine.json ]; then
    bash scripts/install_engine_bundle.sh vllm "$parts" .engines/vllm 2>&1 | tee "$OUT/engine-install.log" | tail -5
fi

# The results packed every 30 s as well as at the end: a call the device's own limit cuts off (a step that overran
# its budget) still brings back the cells finished by then.
pack() { tar czf "$OUT/state.tar.gz.part" results logs 2>/dev/null; mv -f "$OUT/state.tar.gz.part" "$OUT/state.tar.gz"; }
(while sleep 30; do pack; done) >/dev/null 2>&1 &  # its sleep must not hold the call's output open
packer=$!

nvidia-smi --query-gpu=name,uuid,driver_version,memory.total,clocks.max.sm,power.limit --format=csv | tee -a "$OUT/machine.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/machine.txt"
if [ -n "${PYTEST_ARGS:-}" ] && ! spent pytest "$OUT/pytest-gpu.log"; then
    # The log is appended call by call (a suite split over calls); each call's own lines begin with its header.
    # Written into $OUT as it goes, so a call cut off by the device's limit still brings back what ran.
    echo "== $(date -u +%FT%TZ) pytest $PYTEST_ARGS" >>"$HOME/pytest-gpu.log"
    cp "$HOME/pytest-gpu.log" "$OUT/"
    # shellcheck disable=SC2086  # a word list
    timeout "$(left)" python3 -m pytest -p no:cacheprovider -v -rA --durations=25 $PYTEST_ARGS 2>&1 |
        tee -a "$HOME/pytest-gpu.log" "$OUT/pytest-gpu.log" | grep -E "FAILED|ERROR|passed|failed" | tail -40
fi
if [ -n "${BENCHMARK_ARGS:-}" ] && ! spent benchmark "$OUT/benchmark.log"; then
    mkdir -p results/benchmarks
    # Its own Inductor cache: graphs it compiles (a variants run's baseline is a compiled_loop cell's step) would
    # otherwise make the cells' compile_s a warm start's.
    # shellcheck disable=SC2086  # a word list
    (cd benchmarks && TORCHINDUCTOR_CACHE_DIR="$HOME/inductor-benchmarks" TRITON_CACHE_DIR="$HOME/inductor-benchmarks/triton" \
        timeout "$(left)" python3 $BENCHMARK_ARGS) 2>&1 | tee "$OUT/benchmark.log" | tail -40
fi
# Snakemake, told to stop, stopped its job and then stayed over 50 s (an H100 machine, 2026-12-08): told 40 s
# before the budget ends, and killed 20 s after.
if [ -n "${SNAKEMAKE_ARGS:-}" ] && ! spent snakemake "$OUT/snakemake.log" 40; then
    # shellcheck disable=SC2086  # a word list
    timeout -k 20 "$(($(left) - 40))" python3 -m snakemake $SNAKEMAKE_ARGS 2>&1 | tee "$OUT/snakemake.log" |
        grep -E "Finished|Error|error|steps|rror in rule" | tail -40
fi
echo "call wall s: $(( $(date +%s) - start ))"
kill "$packer" 2>/dev/null
wait "$packer" 2>/dev/null
pack
ls -la "$OUT"
