#!/usr/bin/env bash
# Build an offline wheel bundle for a GPU node without internet.
#   scripts/build_wheel_bundle.sh OUT_DIR PYTHON_VERSION PLATFORM PACKAGE==VERSION...
# e.g. scripts/build_wheel_bundle.sh wheels 3.12 manylinux2014_x86_64,manylinux_2_28_x86_64 snakemake==9.27.1
# On the node: pip install --no-index --find-links OUT_DIR PACKAGE==VERSION
# Only binary wheels are fetched for the target; sdist-only dependencies are built here first
# (pure-Python ones build into platform-independent wheels that install anywhere).
set -euo pipefail
out=${1:?out dir}; pyver=${2:?python version}; platform=${3:?platform}; shift 3
[ $# -gt 0 ] || { echo "name at least one package" >&2; exit 2; }
pip="${PIP:-python3 -m pip}"
mkdir -p "$out"
# Dependencies of snakemake that PyPI ships only as source distributions.
SDIST_ONLY=(connection_pool==0.0.3)
for pkg in "${SDIST_ONLY[@]}"; do
  $pip wheel -q --no-deps -w "$out" "$pkg"
done
# PLATFORM may list several tags, comma-separated: pip matches each tag exactly.
platform_args=(); IFS=, read -ra tags <<<"$platform"
for tag in "${tags[@]}"; do platform_args+=(--platform "$tag"); done
$pip download -q --only-binary=:all: --python-version "$pyver" --implementation cp \
  "${platform_args[@]}" --platform any --find-links "$out" -d "$out" "$@"
echo "bundle: $(ls "$out" | wc -l) wheels, $(du -sh "$out" | cut -f1) in $out for cp${pyver/./} $platform"
