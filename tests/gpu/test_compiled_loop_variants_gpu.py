"""compiled_loop's variants on a CUDA GPU: fused projections, decode-attention kernels compiled into CUDA
graphs (FlexAttention's decoding kernel returning the log-sum-exp for the sinks), decode experts paths.
Run with -m gpu."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deploybench.engines import models
from deploybench.engines.base import DecodeBuild
from deploybench.engines.compiled_loop import attention, fusion
from deploybench.engines.compiled_loop.decode_loop import CompiledDecodeLoop
from deploybench.measure import phases as measure
from deploybench.plan.loop_options import CompiledLoopOptions
from deploybench.plan.spec import ModelEntry, standard_decoding
from tests.unit.test_decode_attention import FILLS, FULL_SIZE, Layer, decode_logits, fill_mask, heads_of, math_reference
from tests.unit.test_decode_loop import ALL_CHANGED
from tests.unit.test_measure import CARDS, make_cell, random_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
GPU = {"device": "cuda", "idle_cooldown_s": 0.5, "idle_window_s": 1.0, "min_energy_window_s": 2.0}
KERNELS = sorted(attention.DECODE_KERNELS)
RELATIVE_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 3e-2}  # TF32 and bf16 kernels on the GPU


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("card", [CARDS["gpt_oss"], *FULL_SIZE.values()])
@pytest.mark.parametrize("kernel", KERNELS)
def test_compiled_kernel_matches_float64_math(kernel, card, dtype):
    """Each kernel compiled as the decode step compiles it (FlexAttention: its GPU decoding kernel)."""
    heads, kv_heads, dim, has_sinks = heads_of(card)
    generator = torch.Generator(device="cuda").manual_seed(0)
    sinks = torch.randn(heads, generator=generator, device="cuda").to(dtype) if has_sinks else None
    layer = Layer(sinks).cuda()
    torch._dynamo.reset()  # each case compiles afresh: 4 cards x 2 dtypes would near the recompile limit (8)
    compiled = torch.compile(attention.DECODE_KERNELS[kernel], fullgraph=True)
    for slots, valid in [*FILLS, (2111, range(0, 2048))]:  # and a Qwen3-32B-sized cache at 2048 + 64
        query = torch.randn(1, heads, 1, dim, generator=generator, device="cuda").to(dtype)
        key, value = (torch.randn(1, kv_heads, slots, dim, generator=generator, device="cuda").to(dtype) for _ in "kv")
        mask = fill_mask(slots, valid, dtype).cuda()
        with torch.inference_mode():
            out, _ = compiled(layer, query, key, value, mask, dim**-0.5)
        expected = math_reference(query, key, value, mask, dim**-0.5, sinks)
        error = (out.double() - expected).abs().max() / expected.abs().max()
        print(kernel, Path(card).stem, dtype, slots, f"{error.item():.2e}")
        assert error <= RELATIVE_TOLERANCE[dtype], (slots, error.item())


@pytest.mark.parametrize("family", sorted(CARDS))
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_in_the_model_matches_eager_attention_on_gpu(family, kernel):
    torch.manual_seed(0)
    model = models.load_model(random_model(family), "bfloat16", "cuda").model
    ids = torch.randint(3, 1000, (1, 46), device="cuda")
    for prefill in (5, 31, 45):
        model.set_attn_implementation("eager")
        expected = decode_logits(model, ids[:, : prefill + 1], slots=48).float()
        model.set_attn_implementation(attention.register(model, kernel))
        got = decode_logits(model, ids[:, : prefill + 1], slots=48).float()
        error = ((got - expected).abs().max() / expected.abs().max()).item()
        print(family, kernel, prefill, f"{error:.2e}")
        assert error <= RELATIVE_TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("family", sorted(CARDS))
def test_fusion_frees_the_unfused_weights_on_gpu(family):
    torch.manual_seed(0)
    model = models.load_model(random_model(family), "bfloat16", "cuda").model
    reference = copy.deepcopy(model)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    fusion.fuse(model, ["qkv", "gate_up"])
    torch.cuda.synchronize()
    # The fused weights replaced their parts (each allocation rounds up to 512 bytes: fewer, larger ones round less).
    assert before - (1 << 20) <= torch.cuda.memory_allocated() <= before
    ids = torch.randint(3, 1000, (1, 40), device="cuda")
    with torch.no_grad():
        got, expected = model(ids).logits.float(), reference(ids).logits.float()
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    print(family, f"fused vs unfused bf16 logits: {error:.2e}")
    assert error <= RELATIVE_TOLERANCE[torch.bfloat16]


VARIANTS = [
    {"fusions": ["qkv", "gate_up"]},
    {"decode_attention": "sdpa_gqa"},
    {"decode_attention": "sdpa_folded"},
    {"decode_attention": "flex_decoding"},
    {"decode_experts": "batched_mm"},
    {"decode_experts": "gathered_reduction"},
    {"fusions": ["qkv", "gate_up"], "decode_attention": "flex_decoding", "decode_experts": "gathered_reduction"},
]


def loop_tokens(family: str, options: dict) -> tuple[torch.Tensor, DecodeBuild]:
    """A fresh float32 model and loop for `options`; three runs must replay the same graphs.

    A mixture-of-experts model decodes through gathered_reduction unless the variant names a path:
    grouped_mm cannot be captured outside bf16 (test_grouped_mm_outside_bf16_is_an_unsupported_row)."""
    if family == "gpt_oss":
        options = {"decode_experts": "gathered_reduction", **options}
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = models.load_model(random_model(family), "float32", "cuda").model
    ids = torch.randint(3, 1000, (1, 40), generator=torch.Generator().manual_seed(7)).cuda()
    loop = CompiledDecodeLoop(model, standard_decoding("greedy"), 40, 16, "cuda", CompiledLoopOptions(**options))
    runs = [loop.run(ids, 16, seed=0, clock=True)[1].sequences.clone() for _ in range(3)]
    assert torch.equal(runs[1], runs[2])
    facts = loop.build
    del loop, model
    torch.cuda.empty_cache()
    return runs[-1], facts


@pytest.fixture
def full_float32_matmuls():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: float32 variants must agree to rounding
    yield
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("family", ["gpt_oss", "qwen3"])
def test_every_variant_loop_under_cuda_graphs_gives_the_baseline_tokens(family, full_float32_matmuls):
    baseline, _ = loop_tokens(family, {})
    for options in VARIANTS:
        tokens, facts = loop_tokens(family, options)
        assert torch.equal(tokens, baseline), facts


def test_grouped_mm_outside_bf16_is_an_unsupported_row():
    entry = ModelEntry(source="random", architecture=CARDS["gpt_oss"])
    row = measure.measure_cell(make_cell(entry, context=64, gen=8, dtype="float32", backend="compiled_loop", **GPU))
    assert row["status"] == "failed" and row["failure_kind"] == "unsupported", row["error"]
    assert "decode_experts" in row["error"]


def test_variant_row_on_gpu():
    entry = ModelEntry(source="random", architecture=CARDS["gpt_oss"], compiled_loop=ALL_CHANGED)
    row = measure.measure_cell(make_cell(entry, context=128, gen=16, backend="compiled_loop", **GPU))
    assert row["status"] == "ok" and row["valid"], (row["error"], row["invalid_reasons"])
    assert row["fusions"] == ["qkv"] and row["decode_attention_kernel"] == "flex_decoding"
    assert row["decode_experts_implementation"] == "gathered_reduction"
    assert row["kv_cache_bytes"] == row["kv_cache_bytes_analytic"] and 0 < row["roofline_fraction"] < 1


def test_variants_benchmark_runs_on_gpu(tmp_path):
    out = tmp_path / "variants.json"
    root = Path(__file__).resolve().parents[2]
    command = [
        sys.executable, str(root / "benchmarks/compiled_loop_variants.py"), "--architecture", CARDS["gpt_oss"],
        "--context", "128", "--gen", "16", "--grid", "axes", "--runs", "2", "--ttft-runs", "2", "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=root, timeout=1800)
    report = json.loads(out.read_text())
    errors = {name: v["error"] for name, v in report["variants"].items() if "error" in v}
    assert not errors
    assert report["ceilings"]["copy_bandwidth_bytes_per_s"] > 1e12
    assert all(0 < v["roofline_fraction"] < 1 for v in report["variants"].values())
    # bf16: whether each variant's logits match is the finding, not asserted; that it was judged is.
    assert report["variants"]["baseline"]["stock_logit_gap"] >= 0
    assert all(isinstance(v["logits_match_baseline"], bool) for n, v in report["variants"].items() if n != "baseline")
