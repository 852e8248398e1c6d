"""benchmarks/decode_step_profile.py's per-kernel rows and benchmarks/compare_step_profiles.py over them; and the
profile script end to end on CPU (no device kernels there: it must still run and write its report)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploybench.analytic import step_kernels
from tests.unit.test_measure import CARDS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the profile script imports its sibling _cell


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


profile_script, compare_script = _script("decode_step_profile"), _script("compare_step_profiles")
GEMV, REDUCE, NORM = "nvjet_sm90_tst_256x8_64x6_4x1_v_bz_TNT", "splitKreduce_kernel<bf16>", "triton_red_fused_rsqrt_1"


def _report(kernels_full, kernels_prefill, steps: int, device: str) -> dict:
    totals = [step_kernels.totals(k) for k in (kernels_full, kernels_prefill)]
    per_step = profile_script.decode_step_kinds(*totals, steps)
    return {"architecture": "qwen3-32b.json", "context": 2048, "per_decode_step": per_step,
            "environment": {"device_name": "NVIDIA H100 80GB HBM3", "device_uuid": device}}  # fmt: skip


def test_two_machines_steps_compare_kernel_by_kernel(tmp_path, capsys):
    steps, prefill = 3, [(NORM, 50.0), (GEMV, 900.0)]  # the prefill's kernels are not the step's
    plain = prefill + [(NORM, 2.0), (GEMV, 10.0)] * 2 * steps  # two layers a step
    split = prefill + [(NORM, 2.0), (GEMV, 9.0), (REDUCE, 3.0)] * 2 * steps
    a, b = _report(plain, prefill, steps, "GPU-aaaa"), _report(split, prefill, steps, "GPU-bbbb")
    assert a["per_decode_step"]["matmul"]["kernels"] == 2 and b["per_decode_step"]["matmul"]["kernels"] == 4
    rows = {r["name"]: r for r in compare_script.compare(a, b)}
    assert rows[REDUCE] | {"name": None} == {
        "name": None, "calls_a": 0.0, "calls_b": 2.0, "us_a": 0.0, "us_b": 6.0, "only": "B"
    }  # fmt: skip
    assert rows[GEMV]["us_a"] == pytest.approx(20.0) and rows[GEMV]["us_b"] == pytest.approx(18.0)
    assert rows[NORM]["us_a"] == rows[NORM]["us_b"] == pytest.approx(4.0) and rows[NORM]["only"] == ""
    assert [r["name"] for r in compare_script.compare(a, b)][0] == REDUCE  # most time apart first
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert compare_script.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "`GPU-aaaa`" in out and "calls per step A 4, B 6" in out  # 2 layers: norm + GEMV, + reduce on B
    assert out.index(REDUCE) < out.index(GEMV) < out.index(NORM)


def test_a_report_without_per_kernel_rows_is_named():
    old = {"per_decode_step": {"matmul": {"us": 1.0, "kernels": 2, "top_in_full_run": []}}}
    with pytest.raises(SystemExit, match="old.json: no per-kernel rows"):
        compare_script.kernels(old, "old.json")


def test_step_kernels_cut_long_names_and_leave_out_the_prefills_own():
    long = "void cutlass::Kernel2<" + "x" * 400 + ">"
    full = step_kernels.totals([(long, 5.0), (long, 5.0), ("prefill_gemm", 800.0)])
    prefill = step_kernels.totals([("prefill_gemm", 790.0)])
    (kernel,) = step_kernels.per_step(full, prefill, steps=2)  # prefill_gemm: once in each, not the step's
    assert kernel == step_kernels.StepKernel(long[: step_kernels.NAME_CHARS], 1.0, 5.0)
    assert step_kernels.from_json(step_kernels.to_json((kernel,))) == (kernel,)
    assert step_kernels.from_json(None) == ()


def test_a_steps_kernels_add_up_to_its_kernel_count():
    """kernels_per_token is the launches' difference over the steps; the names' rows share it out exactly, the
    prefill's kernels (equal counts in both generates) contributing nothing to either."""
    prefill = [("gemm", 500.0), ("norm", 3.0)]
    full = prefill + [("gemv", 9.0), ("norm", 1.0), ("gemv", 9.0), ("reduce", 1.0)] * 3
    kernels = step_kernels.per_step(step_kernels.totals(full), step_kernels.totals(prefill), steps=3)
    assert sum(k.calls for k in kernels) == (len(full) - len(prefill)) / 3 == 4
    assert sum(k.us for k in kernels) == pytest.approx((sum(u for _, u in full) - sum(u for _, u in prefill)) / 3)


def test_the_profile_runs_on_cpu(tmp_path):
    out = tmp_path / "profile.json"
    command = [
        sys.executable, "decode_step_profile.py", "--architecture", f"../{CARDS['qwen3']}",
        "--context", "24", "--gen", "6", "--dtype", "float32", "--profile-tokens", "4", "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600, cwd=BENCHMARKS)
    report = json.loads(out.read_text())
    assert report["decode_tps"] > 0 and report["per_decode_step"] == {}  # no CUDA kernels on a CPU
    assert report["linear_gemvs_alone"]["bytes_per_token"] > 0
