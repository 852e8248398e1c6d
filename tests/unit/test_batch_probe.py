"""benchmarks/batch_probe.py runs on CPU with the tiny cards and reports what it says it does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _probe(tmp_path, card: str, *extra: str) -> dict:
    out = tmp_path / "probe.json"
    command = [sys.executable, "benchmarks/batch_probe.py", "--architecture", f"workflow/architectures/{card}.json"]
    command += [
        "--context",
        "24",
        "--gen",
        "5",
        "--batches",
        "1,3",
        "--runs",
        "1",
        "--dtype",
        "float32",
        "--out",
        str(out),
    ]
    subprocess.run([*command, *extra], cwd=ROOT, check=True, capture_output=True, timeout=600)
    return json.loads(out.read_text())


def test_moe_card(tmp_path):
    report = _probe(tmp_path, "tiny-gpt-oss", "--bandwidth", "1e12", "--flops-rate", "1e14")
    one, three = report["batches"]
    assert [one["batch_size"], three["batch_size"]] == [1, 3] and one["status"] == three["status"] == "ok"
    for entry in (one, three):
        assert entry["gen_tokens_measured"] == 5
        assert entry["kv_cache_bytes"] == entry["kv_cache_bytes_analytic"]
        assert entry["decode_tps"] == pytest.approx(entry["batch_size"] * entry["decode_tps_per_seq"])
        assert entry["roofline_tps"] == pytest.approx(entry["batch_size"] * 1e12 / entry["decode_bytes_per_step"])
        assert entry["roofline_compute_tps"] == pytest.approx(
            entry["batch_size"] * 1e14 / entry["decode_flops_per_step"]
        )
    assert three["kv_cache_bytes"] == 3 * one["kv_cache_bytes"]
    assert one["experts_touched_per_layer"] == one["experts_touched_uniform_prediction"] == 2
    assert 2 < three["experts_touched_per_layer"] <= 6
    assert report["ceilings"]["source"] == "given on the command line" and report["n_experts"] == 8


def test_dense_card(tmp_path):
    report = _probe(tmp_path, "tiny-llama")
    assert all(e["status"] == "ok" and "experts_touched_per_layer" not in e for e in report["batches"])
    assert all(e["roofline_tps"] is None and e["decode_bytes_per_step"] > 0 for e in report["batches"])
    assert report["attn_implementation"] == "sdpa"  # transformers' choice unless --attn-implementation
