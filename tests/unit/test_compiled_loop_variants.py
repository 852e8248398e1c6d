"""benchmarks/compiled_loop_variants.py: the variant grid, and a run on CPU with a tiny card."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploybench.analytic import params
from deploybench.engines import models
from tests.unit.test_measure import CARDS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling _cell
spec = importlib.util.spec_from_file_location("compiled_loop_variants", BENCHMARKS / "compiled_loop_variants.py")
variants_script = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = variants_script  # a dataclass looks its module up there
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
    run = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900, cwd=BENCHMARKS.parent)
    report = json.loads(out.read_text())
    assert list(report["variants"]) == ["baseline", "fusions=qkv+gate_up"]
    baseline, fused = report["variants"]["baseline"], report["variants"]["fusions=qkv+gate_up"]
    assert fused["built"]["fusions"] == ["qkv", "gate_up"] and fused["built"]["decode_attention_kernel"] == "gqa_matmul"
    assert fused["tokens_equal_baseline"] is True and len(fused["tokens"]) == 6
    # float32: the loop's model is transformers' to rounding, and the fused one the loop's.
    assert baseline["logit_steps"] == 16 and 0 < baseline["stock_logit_gap"] < 1e-5 * fused["baseline_max_abs_logit"]
    assert fused["max_abs_logit_diff_vs_baseline"] <= 1e-5 * fused["baseline_max_abs_logit"]
    assert fused["logits_match_baseline"] is True
    assert json.loads(run.stdout[run.stdout.index("{") :])["fastest_matching"] in ("baseline", "fusions=qkv+gate_up")
    assert variants_script.Baseline.logits_path(out).exists() and "logits" not in baseline
    assert fused["decode_tps"] > 0 and fused["ttft_ms"] > 0
    # Each variant's step compiled (or loaded from this machine's Inductor cache, which the counts tell apart).
    assert all(v["compile_cache_hits"] + v["compile_cache_misses"] >= 1 for v in (baseline, fused))
    # No CUDA device: no ceilings to judge against, so no roofline.
    assert report["ceilings"] == {"copy_bandwidth_bytes_per_s": None, "gemv_bandwidth_bytes_per_s": None}
    assert fused["roofline_fraction"] is None and report["decode_bytes_per_token"] > 0


def test_a_variant_off_by_more_than_rounding_does_not_match():
    """against_baseline: logits within twice the baseline's distance from transformers' model match; a variant
    whose logits are off at one step (a wrong mask at some position, say) does not, whatever its tokens."""
    import torch

    reference = torch.randn(4, 50)
    baseline = variants_script.Baseline({"tokens": [1, 2, 3], "decode_tps": 10.0, "stock_logit_gap": 1e-3}, reference)
    rounded = reference + 1e-3 * torch.rand(4, 50)
    broken = reference.clone()
    broken[3, 7] += 0.5
    same_tokens = {"tokens": [1, 2, 3], "decode_tps": 12.0}
    assert variants_script.against_baseline(same_tokens, rounded, baseline)["logits_match_baseline"] is True
    verdict = variants_script.against_baseline(same_tokens, broken, baseline)
    assert verdict["logits_match_baseline"] is False and verdict["tokens_equal_baseline"] is True
    assert verdict["max_abs_logit_diff_vs_baseline"] == pytest.approx(0.5)
    assert verdict["decode_speedup_vs_baseline"] == pytest.approx(1.2)
    parted = variants_script.against_baseline({"tokens": [1, 5, 3], "decode_tps": 12.0}, rounded, baseline)
    assert parted["logits_match_baseline"] is True and parted["first_differing_token"] == 1


def test_summary_names_the_fastest_matching_variant():
    report = {
        "ceilings": {},
        "variants": {
            "baseline": {"decode_tps": 10.0, "stock_logit_gap": 0.1},
            "fast_but_off": {"decode_tps": 30.0, "logits_match_baseline": False},
            "faster": {"decode_tps": 12.0, "logits_match_baseline": True},
            "failed": {"error": "OutOfMemoryError"},
        },
    }
    assert variants_script.summary(report)["fastest_matching"] == "faster"
    report["variants"]["faster"]["logits_match_baseline"] = False
    assert variants_script.summary(report)["fastest_matching"] == "baseline"


def test_variants_table_bolds_the_fastest_matching_variant_and_prints_errors():
    spec_t = importlib.util.spec_from_file_location("variants_table", BENCHMARKS / "variants_table.py")
    table = importlib.util.module_from_spec(spec_t)
    spec_t.loader.exec_module(table)
    common = {"roofline_fraction": 0.5, "roofline_fraction_gemv": 0.6}
    report = {
        "architecture": "workflow/architectures/qwen3-32b.json",
        "environment": {"device_uuid": "GPU-0123456789ab-cdef"},
        "ceilings": {},
        "variants": {
            "baseline": {"decode_tps": 30.0, "stock_logit_gap": 0.25, **common},
            "attention=sdpa_gqa": {
                "decode_tps": 33.0,
                "decode_speedup_vs_baseline": 1.1,
                "logits_match_baseline": True,
                "max_abs_logit_diff_vs_baseline": 0.3,
                **common,
            },
            "fusions=qkv": {
                "decode_tps": 40.0,
                "decode_speedup_vs_baseline": 4 / 3,
                "logits_match_baseline": False,
                "max_abs_logit_diff_vs_baseline": 3.0,
                **common,
            },
            "fusions=gate_up": {"error": "OutOfMemoryError: CUDA out of memory"},
        },
    }
    lines = table.markdown([report]).splitlines()
    assert lines[0].startswith("| model | variant | decode tok/s |") and len(lines) == 2 + 4
    assert lines[2] == "| qwen3-32b | baseline | 30.00 | — | 0.50 / 0.60 | (itself) | (0.250) | `GPU-01234567` |"
    assert "| **attention=sdpa_gqa** | **33.00** | 1.10× |" in lines[3] and "| yes | 0.300 |" in lines[3]
    assert "| fusions=qkv | 40.00 | 1.33× |" in lines[4] and "| no | 3.00 |" in lines[4]
    assert "error: OutOfMemoryError" in lines[5]
    for result in report["variants"].values():  # a report from before the logit check: nothing marked
        result.pop("logits_match_baseline", None)
    assert "**" not in table.markdown([report]) and "| — | 0.300 |" in table.markdown([report])
