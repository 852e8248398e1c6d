"""An engine's wheels for a machine without network, in parts small enough to carry one at a time.

A GPU node without network cannot `pip install vllm`; its wheels travel instead. vLLM's wheel is ~300 MB and
the dependencies the GPU image lacks ~55 MB, more than one transfer may carry, so the bundle is one tar of
the wheels, cut into parts of at most `part_bytes`, each with its SHA-256 in `manifest.json`; on the node
`assemble` checks every part before it joins them, and names the part that is missing or damaged.

Files of the engine's wheel that the target never imports can be left out (`leave_out`): the wheel is
rewritten without them and without their RECORD lines, and the manifest says what was left out and why.
Only the standard library is used: `assemble` runs on the node before anything is installed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST = "manifest.json"
TAR_NAME = "wheels.tar"
PART_NAME = "part-{:02d}"
CHUNK = 1 << 20


class BundleError(RuntimeError):
    """A bundle that cannot be built or assembled, with what is wrong in it."""


@dataclass(frozen=True)
class Part:
    name: str
    bytes: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def strip_wheel(wheel: Path, out: Path, leave_out: Iterable[str]) -> list[str]:
    """Write `wheel` to `out` without the members named in `leave_out` (and their RECORD lines).

    Every name must be in the wheel: a name that is not means the wheel changed, and is an error."""
    names = set(leave_out)
    with zipfile.ZipFile(wheel) as src:
        members = src.namelist()
        missing = sorted(names - set(members))
        if missing:
            raise BundleError(f"{wheel.name} has no {missing}: the files to leave out were listed for another wheel")
        record = next((m for m in members if m.endswith(".dist-info/RECORD")), None)
        if record is None:
            raise BundleError(f"{wheel.name} has no .dist-info/RECORD")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                if info.filename in names:
                    continue
                data = src.read(info.filename)
                if info.filename == record:
                    kept = [line for line in data.decode().splitlines() if line.split(",", 1)[0] not in names]
                    data = ("\n".join(kept) + "\n").encode()
                dst.writestr(info, data, compress_type=info.compress_type)
    return sorted(names)


def split_bundle(wheels: Iterable[Path], out_dir: Path, part_bytes: int, facts: Mapping) -> dict:
    """Tar `wheels` (stored, not compressed: wheels are zips) and cut the tar into parts of at most
    `part_bytes` under `out_dir`; write and return the manifest (`facts` plus the wheels and the parts)."""
    if part_bytes < 1:
        raise BundleError(f"part size must be positive, got {part_bytes} bytes")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("part-*"):
        old.unlink()
    wheels = sorted(wheels, key=lambda p: p.name)
    tar_path = out_dir / TAR_NAME
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for wheel in wheels:
            tar.add(wheel, arcname=wheel.name)
    parts = []
    with open(tar_path, "rb") as f:
        while data := f.read(part_bytes):
            path = out_dir / PART_NAME.format(len(parts) + 1)
            path.write_bytes(data)
            parts.append(Part(path.name, len(data), hashlib.sha256(data).hexdigest()))
    manifest = {
        **facts,
        "wheels": {w.name: {"bytes": w.stat().st_size, "sha256": sha256_of(w)} for w in wheels},
        "tar": {"name": TAR_NAME, "bytes": tar_path.stat().st_size, "sha256": sha256_of(tar_path)},
        "part_bytes_max": part_bytes,
        "parts": [asdict(p) for p in parts],
    }
    tar_path.unlink()
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def assemble(parts_dir: Path, out_dir: Path) -> list[Path]:
    """Check every part against the manifest, join them, unpack the wheels into `out_dir`; their paths."""
    manifest_path = parts_dir / MANIFEST
    if not manifest_path.exists():
        raise BundleError(f"no {MANIFEST} in {parts_dir}: carry it with the parts")
    manifest = json.loads(manifest_path.read_text())
    missing = [p["name"] for p in manifest["parts"] if not (parts_dir / p["name"]).exists()]
    if missing:
        raise BundleError(f"{len(missing)} of {len(manifest['parts'])} parts missing in {parts_dir}: {missing}")
    for p in manifest["parts"]:
        path = parts_dir / p["name"]
        size, digest = path.stat().st_size, sha256_of(path)
        if (size, digest) != (p["bytes"], p["sha256"]):
            raise BundleError(f"{p['name']} is damaged: {size} bytes, sha256 {digest[:12]}; expected {p['bytes']}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tar_path = out_dir / manifest["tar"]["name"]
    with open(tar_path, "wb") as joined:
        for p in manifest["parts"]:
            with open(parts_dir / p["name"], "rb") as f:
                while block := f.read(CHUNK):
                    joined.write(block)
    with tarfile.open(tar_path) as tar:
        tar.extractall(out_dir, filter="data")
    os.unlink(tar_path)
    wheels = [out_dir / name for name in manifest["wheels"]]
    for wheel in wheels:
        if sha256_of(wheel) != manifest["wheels"][wheel.name]["sha256"]:
            raise BundleError(f"{wheel.name} differs from the manifest after unpacking")
    return wheels
