#!/usr/bin/env bash
# One call on the GPU machine (no network, no snakemake): install the offline wheel bundle,
# restore the previous GPU run's results (unless this machine still has them) so Snakemake only runs missing cells, run what is
# asked, and pack the state back into $OUT.
#   bash benchmarks/gpu_session.sh "<pytest args or ''>" "<snakemake args or ''>" [seconds budget]
set -uo pipefail
OUT=${OUT:-/tmp/deploybench-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
# deploybench is not installed there: the carried tree is the package, for Snakemake, its jobs,
# pytest and the benchmark scripts alike.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Fail fast, before device time goes to a run that cannot start: the bundle, then the library and its catalogue.
[ -d .whl ] || { echo "no .whl here: build it with make bundle BUNDLE_DIR=.whl and carry .whl"; exit 2; }
python3 -m pip install -q --no-index --find-links .whl snakemake==9.27.1 pydantic==2.14.4 \
  2>&1 | grep -v -i warning | tail -3
python3 -c "import snakemake, pydantic, deploybench.measure.phases" || { echo "pre-flight: an import failed"; exit 2; }
# A machine kept warm since the last call still has that call's results, newer than the carried state.
if [ -d results/cells ]; then echo "kept $(ls results/cells/*/*/*.parquet 2>/dev/null | wc -l) cells from the last call on this machine"
elif [ -f gpu-state/state.tar.gz ]; then tar xzf gpu-state/state.tar.gz; echo "restored $(ls results/cells/*/*/*.parquet 2>/dev/null | wc -l) cells"; fi
nvidia-smi --query-gpu=name,uuid,driver_version,memory.total,clocks.max.sm --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
start=$(date +%s)
if [ -n "${1:-}" ]; then
  python3 -m pytest $1 2>&1 | tee "$OUT/pytest.log" | tail -40
fi
if [ -n "${2:-}" ]; then
  timeout ${3:-400} /usr/bin/time -v python3 -m snakemake $2 2>&1 | tee "$OUT/snakemake.log" | grep -E "Finished|Error|error|steps|Elapsed|Maximum resident" | tail -60
fi
echo "session wall s: $(( $(date +%s) - start ))"
tar czf "$OUT/state.tar.gz" results logs .snakemake/metadata 2>/dev/null
ls -la "$OUT"
