"""Build a serving engine's offline bundle here, or assemble it on the machine without network.

    python scripts/engine_bundle.py build config/engines/vllm-0.26.0-cu13.yaml OUT_DIR --part-mib 48
    python scripts/engine_bundle.py assemble PARTS_DIR WHEEL_DIR

`build` downloads the engine's wheel and the dependencies the spec lists (binary wheels for the spec's Python
and platforms, no resolution: the spec is the lock), leaves out the wheel's files the spec names, and cuts
the bundle into parts of at most --part-mib MiB with a manifest (deploybench.engines.serving.bundle).
Carry OUT_DIR's manifest.json and one part per transfer; `assemble` checks them and unpacks the wheels.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploybench.engines.serving.bundle import BundleError, assemble, split_bundle, strip_wheel

MIB = 1 << 20


def download(specs: list[str], python: str, platforms: list[str], dest: Path) -> None:
    platform_args = [arg for tag in platforms for arg in ("--platform", tag)]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python, "--implementation", "cp", *platform_args, "--platform", "any"]
    subprocess.run([*command, "-d", str(dest), *specs], check=True)


def build(spec_path: Path, out_dir: Path, part_mib: float) -> dict:
    import yaml

    spec = yaml.safe_load(spec_path.read_text())
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        raw, wheels = Path(tmp, "raw"), Path(tmp, "wheels")
        wheels.mkdir()
        download([spec["engine"]], spec["python"], spec["platforms"], raw)
        (engine_wheel,) = raw.glob("*.whl")
        left_out = strip_wheel(engine_wheel, wheels / engine_wheel.name, spec.get("leave_out_files", {}))
        download(spec["dependencies"], spec["python"], spec["platforms"], wheels)
        got = len(list(wheels.glob("*.whl")))
        if got != 1 + len(spec["dependencies"]):
            raise BundleError(f"{got} wheels for 1 engine and {len(spec['dependencies'])} dependencies")
        facts = {
            "spec": str(spec_path),
            "engine": spec["engine"],
            "distribution": spec["distribution"],
            "python": spec["python"],
            "engine_wheel": engine_wheel.name,
            "engine_wheel_bytes_original": engine_wheel.stat().st_size,
            "left_out_files": {name: spec["leave_out_files"][name] for name in left_out},
            "left_out_dependencies": spec.get("left_out_dependencies", {}),
            "provided_by_image": spec.get("provided_by_image", []),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        manifest = split_bundle(wheels.glob("*.whl"), out_dir, int(part_mib * MIB), facts)
    total = sum(p["bytes"] for p in manifest["parts"])
    print(
        f"[bundle] {spec['engine']}: {len(manifest['wheels'])} wheels, {total / MIB:.1f} MiB in "
        f"{len(manifest['parts'])} parts of at most {part_mib:g} MiB under {out_dir} ({time.time() - started:.0f} s)"
    )
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download, trim and cut the bundle")
    b.add_argument("spec", type=Path)
    b.add_argument("out_dir", type=Path)
    b.add_argument("--part-mib", type=float, default=48.0)
    a = sub.add_parser("assemble", help="check the parts and unpack the wheels")
    a.add_argument("parts_dir", type=Path)
    a.add_argument("wheel_dir", type=Path)
    args = parser.parse_args()
    try:
        if args.command == "build":
            build(args.spec, args.out_dir, args.part_mib)
        else:
            wheels = assemble(args.parts_dir, args.wheel_dir)
            print(f"[bundle] {len(wheels)} wheels in {args.wheel_dir}")
    except BundleError as e:
        print(f"[bundle] {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
