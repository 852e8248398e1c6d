#!/usr/bin/env bash
# Install a serving engine from its offline bundle (scripts/engine_bundle.py build) on a machine without network.
#
#   install_engine_bundle.sh ENGINE PARTS_DIR ENV_DIR [PYTHON]
#
# PARTS_DIR holds manifest.json and every part (carried one transfer at a time). The parts are checked and
# joined, and the wheels installed without resolution (the bundle's spec is the lock) into ENV_DIR, a venv
# that sees PYTHON's site-packages: the machine's torch and transformers, which the bundle leaves out. The
# project's own packages are never in it (they live elsewhere, on the project's PYTHONPATH, which the serve
# job strips from the server's environment). ENV_DIR/deploybench-engine.json is written last, after the
# engine's server module imported.
set -euo pipefail
engine=${1:?engine name, e.g. vllm}
parts_dir=${2:?folder of manifest.json and the parts}
env_dir=${3:?venv to create}
python=${4:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
record="$env_dir/deploybench-engine.json"
start=$(date +%s)

rm -f "$record"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
PYTHONPATH="$repo" "$python" "$repo/scripts/engine_bundle.py" assemble "$parts_dir" "$wheels"
test -x "$env_dir/bin/python" || "$python" -m venv --system-site-packages "$env_dir"
# --system-site-packages reaches the base installation only: where PYTHON is itself a venv (the GPU image's
# python3 is /opt/torch/.venv's), its site-packages are added by a .pth, after the engine's own packages.
site=$("$env_dir/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$python" -c "import sysconfig; p = sysconfig.get_paths(); print('\n'.join(dict.fromkeys([p['purelib'], p['platlib']])))" \
    > "$site/_deploybench_base_env.pth"
"$env_dir/bin/python" -m pip install -q --no-index --no-deps --no-cache-dir "$wheels"/*.whl
read -r dist spec < <("$python" -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['distribution'], m['engine'])" "$parts_dir/manifest.json")
if [ "$engine" = vllm ]; then
    # What the server start imports first; a missing dependency is named here, not minutes into a serve job.
    "$env_dir/bin/python" -c "import torch, vllm.entrypoints.openai.api_server"
fi
seconds=$(( $(date +%s) - start ))
"$env_dir/bin/python" "$repo/scripts/record_engine_env.py" "$engine" "$dist" "$spec offline-bundle" "" "$seconds" "$record"
echo "[engine] $engine in $env_dir from $parts_dir: ${seconds} s, $(du -sh "$env_dir" | cut -f1)"
