"""benchmarks/compiled_loop_variants.py: the variant grid, and a run on CPU with a tiny card."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from deploybench.analytic import params
from deploybench.engines import models
from tests.unit.test_measure import CARDS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling _cell
spec = importlib.util.spec_from_file_location("compiled_loop_variants", BENCHMARKS / "compiled_loop_variants.py")
variants_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(variants_script)


def grid(family: str, kind: str, experts: str | None = None) -> dict:
    return variants_script.variants(params.build_meta_model(models.load_card(CARDS[family])), experts, kind)


def test_axes_change_one_option_at_a_time():
    assert list(grid("gpt_oss", "axes")) == [
        "baseline",
        "fusions=qkv",  # gpt-oss has no gate_up to fuse
        "attention=sdpa_gqa",
        "attention=sdpa_folded",
        "attention=flex_decoding",
        "experts=batched_mm",
        "experts=gathered_reduction",
    ]
    assert list(grid("qwen3", "axes")) == [
        "baseline",
        "fusions=qkv",
        "fusions=gate_up",
        "fusions=qkv+gate_up",
        "attention=sdpa_gqa",
        "attention=sdpa_folded",
        "attention=flex_decoding",
    ]
    assert "experts=grouped_mm" in grid("gpt_oss", "axes", experts="batched_mm")


def test_full_grid_is_every_combination():
    assert len(grid("qwen3", "full")) == 4 * 4  # no fusion and three fusion sets; four kernels
    full = grid("gpt_oss", "full")
    assert len(full) == 2 * 4 * 3 and list(full)[0] == "baseline"
    assert full["fusions=qkv,attention=flex_decoding,experts=gathered_reduction"] == {
        "fusions": ["qkv"],
        "decode_attention": "flex_decoding",
        "decode_experts": "gathered_reduction",
    }


def test_runs_on_cpu_with_a_tiny_card(tmp_path):
    out = tmp_path / "variants.json"
    command = [
        sys.executable,
        str(BENCHMARKS / "compiled_loop_variants.py"),
        "--architecture", CARDS["qwen3"], "--context", "24", "--gen", "6", "--dtype", "float32",
        "--only", "fusions=qkv+gate_up", "--runs", "1", "--ttft-runs", "1", "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=900, cwd=BENCHMARKS.parent)
    report = json.loads(out.read_text())
    assert list(report["variants"]) == ["baseline", "fusions=qkv+gate_up"]
    fused = report["variants"]["fusions=qkv+gate_up"]
    assert fused["built"]["fusions"] == ["qkv", "gate_up"] and fused["built"]["decode_attention_kernel"] == "gqa_matmul"
    assert fused["tokens_equal_baseline"] is True and len(fused["tokens"]) == 6
    assert fused["max_abs_logit_diff_vs_baseline"] <= 1e-5 * fused["baseline_max_abs_logit"]
    assert fused["decode_tps"] > 0 and fused["ttft_ms"] > 0
    # No CUDA device: no ceilings to judge against, so no roofline.
    assert report["ceilings"] == {"copy_bandwidth_bytes_per_s": None, "gemv_bandwidth_bytes_per_s": None}
    assert fused["roofline_fraction"] is None and report["decode_bytes_per_token"] > 0
