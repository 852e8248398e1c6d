"""Boundness, calibration and the host record: thresholds, nulls on CPU, what each figure follows."""

from __future__ import annotations

import subprocess

import pytest
import torch

from deploybench.analytic import boundness, params
from deploybench.engines import models
from deploybench.enums import BoundBy
from deploybench.instruments import calibration, host, profiler


@pytest.mark.parametrize(
    "busy, intensity, ridge, verdict",
    [
        (None, 1.0, 200.0, None),
        (0.17, 1.0, 200.0, BoundBy.HOST),
        (0.49, 1.0, 200.0, BoundBy.HOST),
        (0.5, 1.0, 200.0, BoundBy.MIXED),
        (0.79, 1.0, 200.0, BoundBy.MIXED),
        (0.8, 1.0, 200.0, BoundBy.MEMORY_BANDWIDTH),
        (0.99, 1.0, None, None),  # GPU-busy, but no ridge to tell compute from memory bandwidth
        (0.3, 1.0, None, BoundBy.HOST),  # the host verdict needs no ridge
        (0.99, 250.0, 200.0, BoundBy.COMPUTE),
    ],
)
def test_verdict_thresholds(busy, intensity, ridge, verdict):
    assert boundness.bound_by(busy, intensity, ridge) == verdict


def test_busy_fraction_is_kernel_time_over_wall_time_per_step():
    assert boundness.busy_fraction(23.5, 50.7) == pytest.approx(0.4635, abs=1e-4)
    assert boundness.busy_fraction(None, 50.7) is None and boundness.busy_fraction(23.5, None) is None


def test_profile_length_follows_the_cache():
    assert boundness.profile_tokens(64, cache_sized_by_length=False) == boundness.PROFILE_TOKENS
    assert boundness.profile_tokens(64, cache_sized_by_length=True) == 64  # no recompile for a new length
    assert boundness.profile_tokens(8, cache_sized_by_length=False) == 8


def test_no_profile_and_no_ceilings_on_cpu():
    calls = []
    assert profiler.profile_decode_steps(lambda *a: calls.append(a), 16, "cpu") is None
    assert calls == [], "nothing may run on a CPU device"
    assert calibration.gemv_bandwidth((64, 64), torch.bfloat16, "cpu") is None
    assert calibration.gemm_flops(torch.bfloat16, "cpu") is None
    assert calibration.launch_us("cpu") is None


@pytest.mark.parametrize(
    "card, shape", [("qwen3-32b", (25600, 5120)), ("yi-34b", (20480, 7168)), ("gpt-oss-20b", (2880, 5760))]
)
def test_dominant_weight_shape_is_the_one_decode_streams_most(card, shape):
    model = params.build_meta_model(models.load_card(f"workflow/architectures/{card}.json"))
    assert calibration.dominant_weight_shape(model) == shape


def test_host_record_has_every_field():
    record = host.record()
    assert record["cpu_model"] and record["cpu_count"] >= 1
    assert 0 < record["python_loop_ns"] < 10_000
    assert len(record["source_sha256"]) == 64


def test_code_revision_is_the_commit_and_says_dirty(tmp_path, monkeypatch):
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=host.PACKAGE_DIR)
    monkeypatch.delenv(host.REVISION_ENV, raising=False)
    revision = host.code_revision()
    if head.returncode == 0:
        assert revision.removesuffix("+dirty") == head.stdout.strip()
        # The declared revision wins over a checkout's (possibly stale) git metadata.
        monkeypatch.setenv(host.REVISION_ENV, "declared1")
        assert host.code_revision() == "declared1"
        monkeypatch.delenv(host.REVISION_ENV)
    monkeypatch.setattr(host, "PACKAGE_DIR", tmp_path / "pkg")  # no git checkout above it
    monkeypatch.setenv(host.REVISION_ENV, "abc123")
    assert host.code_revision() == "abc123"
    monkeypatch.delenv(host.REVISION_ENV)
    assert host.code_revision() == "unknown"


def test_source_hash_follows_the_library_text(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(host, "PACKAGE_DIR", tmp_path)
    before = host.source_sha256()
    (tmp_path / "a.py").write_text("x = 2\n")
    assert host.source_sha256() != before


def test_a_null_verdict_says_why():
    from deploybench.measure.cell_figures import boundness_figures
    from deploybench.measure.runs import Ceilings

    assert "no CUDA device" in boundness_figures(None, None, 2.0, None, "cpu").boundness_null_reason
    gen_1 = boundness_figures(None, None, 2.0, None, "cuda:0")
    assert gen_1.boundness_null_reason == "gen below 2: no decode step to profile"
    step = boundness.StepProfile(profile_tokens=8, kernels_per_token=100.0, gpu_kernel_ms_per_token=9.5)
    intensity = 2e9 / 1e9  # decode FLOPs / bytes per step
    no_ridge = boundness_figures(step, 10.0, intensity, Ceilings("1x1").ridge_flops_per_byte, "cuda:0")
    assert no_ridge.bound_by is None and "no ridge" in no_ridge.boundness_null_reason
    ridge = Ceilings("1x1", gemm_flops_per_s=7e14, gemv_bandwidth_bytes_per_s=4e12).ridge_flops_per_byte
    measured = boundness_figures(step, 10.0, intensity, ridge, "cuda:0")
    assert measured.bound_by == "memory_bandwidth" and measured.boundness_null_reason is None
