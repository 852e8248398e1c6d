"""The offline engine bundle: a wheel trimmed, cut into parts, checked and joined again, installed by real pip."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploybench.engines.serving.bundle import MANIFEST, BundleError, assemble, split_bundle, strip_wheel

FILES = {
    "tinypkg/__init__.py": b"VALUE = 7\n",
    "tinypkg/_kernels_old.so": bytes(range(256)) * 40,  # stands for a kernel library the target never loads
    "tinypkg/_kernels_new.py": b"NEW = True\n",
}


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path) -> Path:
    """A real wheel of a tiny package (METADATA, WHEEL, RECORD with hashes), as pip installs it."""
    dist = "tinypkg-1.0.dist-info"
    meta = {
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    contents = {**FILES, **meta}
    record = "".join(f"{name},{_hash(data)},{len(data)}\n" for name, data in contents.items()) + f"{dist}/RECORD,,\n"
    path = folder / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in {**contents, f"{dist}/RECORD": record.encode()}.items():
            z.writestr(name, data)
    return path


def test_a_stripped_wheel_installs_without_the_file_left_out(tmp_path):
    src, out = make_wheel(tmp_path), tmp_path / "out"
    out.mkdir()
    stripped = out / src.name
    assert strip_wheel(src, stripped, ["tinypkg/_kernels_old.so"]) == ["tinypkg/_kernels_old.so"]
    with zipfile.ZipFile(stripped) as z:
        names = z.namelist()
        record = z.read("tinypkg-1.0.dist-info/RECORD").decode()
    assert "tinypkg/_kernels_old.so" not in names and "tinypkg/_kernels_new.py" in names
    assert "_kernels_old" not in record
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target), stripped],
        check=True,
    )
    assert (target / "tinypkg" / "_kernels_new.py").exists()
    assert not (target / "tinypkg" / "_kernels_old.so").exists()


def test_leaving_out_a_file_the_wheel_lacks_is_an_error(tmp_path):
    with pytest.raises(BundleError, match="has no"):
        strip_wheel(make_wheel(tmp_path), tmp_path / "x.whl", ["tinypkg/not_there.so"])


def test_parts_join_to_the_same_wheels(tmp_path):
    wheel = make_wheel(tmp_path)
    other = tmp_path / "other-2.0-py3-none-any.whl"
    other.write_bytes(b"not really a zip, but bytes travel as bytes" * 100)
    manifest = split_bundle([wheel, other], tmp_path / "parts", 1000, {"engine": "tinypkg==1.0"})
    parts = manifest["parts"]
    assert len(parts) > 3 and all(p["bytes"] <= 1000 for p in parts)
    assert sum(p["bytes"] for p in parts) == manifest["tar"]["bytes"]
    assert json.loads((tmp_path / "parts" / MANIFEST).read_text())["engine"] == "tinypkg==1.0"
    assert not (tmp_path / "parts" / "wheels.tar").exists()
    got = assemble(tmp_path / "parts", tmp_path / "joined")
    assert sorted(p.name for p in got) == sorted([wheel.name, other.name])
    assert (tmp_path / "joined" / wheel.name).read_bytes() == wheel.read_bytes()
    assert (tmp_path / "joined" / other.name).read_bytes() == other.read_bytes()


def test_a_missing_or_damaged_part_is_named_before_anything_is_joined(tmp_path):
    split_bundle([make_wheel(tmp_path)], tmp_path / "parts", 500, {})
    third = tmp_path / "parts" / "part-03"
    data = third.read_bytes()
    third.unlink()
    with pytest.raises(BundleError, match=r"parts missing .*part-03"):
        assemble(tmp_path / "parts", tmp_path / "joined")
    third.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(BundleError, match="part-03 is damaged"):
        assemble(tmp_path / "parts", tmp_path / "joined")
    assert not (tmp_path / "joined").exists()


def test_the_vllm_spec_is_a_lock(tmp_path):
    """Every dependency is pinned to one version, and a left-out file names a reason."""
    import yaml

    spec = yaml.safe_load(Path("config/engines/vllm-0.26.0-cu13.yaml").read_text())
    assert spec["engine"] == "vllm==0.26.0"
    pins = [d.split("==") for d in spec["dependencies"]]
    assert all(len(p) == 2 and p[1] for p in pins)
    names = [p[0].lower().replace("_", "-") for p in pins]
    assert len(names) == len(set(names))
    assert all(reason.strip() for reason in spec["leave_out_files"].values())


def test_the_install_script_makes_an_env_that_sees_the_creating_venv(tmp_path):
    """scripts/install_engine_bundle.sh from a venv's interpreter (as the GPU image's python3 is): the engine's env
    holds the bundle's packages and still imports what only the creating venv has (there: torch; here: pydantic)."""
    split_bundle([make_wheel(tmp_path)], tmp_path / "parts", 700, {"engine": "tinypkg==1.0", "distribution": "tinypkg"})
    env = tmp_path / "env"
    subprocess.run(
        ["bash", "scripts/install_engine_bundle.sh", "tinypkg", str(tmp_path / "parts"), str(env), sys.executable],
        check=True,
        capture_output=True,
    )
    probe = "import tinypkg, pydantic, sys; print(tinypkg.VALUE, sys.prefix)"
    out = subprocess.run([env / "bin" / "python", "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["7", str(env)]
    record = json.loads((env / "deploybench-engine.json").read_text())
    assert record["engine"] == "tinypkg" and record["version"] == "1.0"
