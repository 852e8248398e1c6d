"""Calibration, the decode-step profile and the all-experts path on a CUDA GPU. Run with -m gpu."""

from __future__ import annotations

import pytest
import torch

from deploybench.engines import experts, models
from deploybench.instruments import calibration, profiler

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_ceilings_are_physical():
    copy = _copy_bandwidth()
    gemv = calibration.gemv_bandwidth((25600, 5120), torch.bfloat16, "cuda", min_s=0.3)
    torch.cuda.empty_cache()
    # A GEMV streams its matrix once: at most what a plain copy sustains, and not far below it on an H100/H200.
    assert 0.5 * copy < gemv < 1.05 * copy, (gemv, copy)
    flops = calibration.gemm_flops(torch.bfloat16, "cuda", min_s=0.1)
    assert 1e14 < flops < 2e15, flops
    assert 1.0 < calibration.launch_us("cuda") < 100.0


def _copy_bandwidth() -> float:
    return calibration.copy_bandwidth("cuda")


def test_profile_counts_the_kernels_of_a_decode_step():
    from transformers import AutoModelForCausalLM

    config = models.load_card("workflow/architectures/tiny-qwen3.json")
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    ids = torch.randint(3, 1000, (1, 64), device="cuda")

    def run(new_tokens, i, clock):
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        torch.cuda.synchronize()
        return None, out

    profile = profiler.profile_decode_steps(run, tokens=16, device="cuda")
    # Each decode step runs at least one kernel per layer; a tiny model's kernels take microseconds.
    assert profile.kernels_per_token >= config.num_hidden_layers
    assert 0 < profile.gpu_kernel_ms_per_token < 50


def test_all_experts_equals_routed_on_gpu():
    from transformers import AutoModelForCausalLM

    experts.register()
    config = models.load_card("workflow/architectures/tiny-gpt-oss.json")
    ids = torch.randint(3, 1000, (1, 32), device="cuda")
    logits = {}
    for implementation in ("grouped_mm", "all_experts"):
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(
                config, dtype=torch.bfloat16, experts_implementation=implementation
            ).eval()
        with torch.no_grad():
            logits[implementation] = model(ids).logits.float()
    torch.testing.assert_close(logits["all_experts"], logits["grouped_mm"], rtol=0.05, atol=0.05)
