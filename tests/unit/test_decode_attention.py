"""Decode-attention kernels (GQA matmul, SDPA with enable_gqa, FlexAttention) against float64 math, and inside
each card's model against transformers' eager attention at several cache fill levels."""

from __future__ import annotations

import json

import pytest
import torch

from deploybench.engines import models
from deploybench.engines.compiled_loop import attention
from deploybench.enums import DecodeAttentionKernel
from tests.unit.test_measure import CARDS, random_model

KERNELS = sorted(attention.DECODE_KERNELS)
FULL_SIZE = {
    "gpt-oss-20b": "workflow/architectures/gpt-oss-20b.json",
    "qwen3-32b": "workflow/architectures/qwen3-32b.json",
    "yi-34b": "workflow/architectures/yi-34b.json",
}
# Max |kernel - float64 math| over max |math|.
RELATIVE_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def heads_of(card_path: str) -> tuple[int, int, int, bool]:
    card = json.loads(open(card_path).read())
    heads, kv_heads = card["num_attention_heads"], card["num_key_value_heads"]
    return heads, kv_heads, card.get("head_dim") or card["hidden_size"] // heads, card["model_type"] == "gpt_oss"


class Layer(torch.nn.Module):
    """What an attention function reads from its module: the sinks (gpt-oss) and training."""

    def __init__(self, sinks=None):
        super().__init__()
        if sinks is not None:
            self.sinks = torch.nn.Parameter(sinks)


def math_reference(query, key, value, mask, scaling, sinks=None):
    """softmax([q.k * scaling + mask, sink]) @ [v, 0] in float64, K and V repeated per query head."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.double().repeat_interleave(groups, 1), value.double().repeat_interleave(groups, 1)
    logits = query.double() @ key.transpose(2, 3) * scaling + mask.double()
    if sinks is not None:
        sink = sinks.double().view(1, -1, 1, 1).expand(*logits.shape[:3], 1)
        logits = torch.cat([logits, sink], dim=-1)
    probs = logits.softmax(-1)[..., : key.shape[2]]
    return (probs @ value).transpose(1, 2)


def fill_mask(slots: int, valid: range, dtype) -> torch.Tensor:
    """Additive mask over a layer's slots: 0 on the `valid` ones, the dtype's minimum elsewhere."""
    mask = torch.full((1, 1, 1, slots), torch.finfo(dtype).min, dtype=dtype)
    mask[..., valid.start : valid.stop] = 0
    return mask


# (slots, visible slots): a static cache with one, some and all slots written; a sliding window over the last 20
# of 32 slots (the older ones hidden) and a window buffer full.
FILLS = [(48, range(0, 1)), (48, range(0, 20)), (48, range(0, 48)), (32, range(12, 32)), (32, range(0, 32))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("card", [*CARDS.values(), *FULL_SIZE.values()])
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_matches_float64_math_at_every_fill_level(kernel, card, dtype):
    heads, kv_heads, dim, has_sinks = heads_of(card)
    generator = torch.Generator().manual_seed(0)
    sinks = torch.randn(heads, generator=generator) if has_sinks else None
    layer = Layer(sinks.to(dtype) if has_sinks else None)
    for slots, valid in FILLS:
        query = torch.randn(1, heads, 1, dim, generator=generator).to(dtype)
        key, value = (torch.randn(1, kv_heads, slots, dim, generator=generator).to(dtype) for _ in range(2))
        mask = fill_mask(slots, valid, dtype)
        out, _ = attention.DECODE_KERNELS[kernel](layer, query, key, value, mask, dim**-0.5)
        expected = math_reference(query, key, value, mask, dim**-0.5, layer.sinks if has_sinks else None)
        assert out.shape == expected.shape == (1, 1, heads, dim)
        error = (out.double() - expected).abs().max() / expected.abs().max()
        assert error <= RELATIVE_TOLERANCE[dtype], (slots, valid, error.item())


def test_a_sink_scales_the_output_by_sigmoid_of_lse_minus_sink():
    """softmax over [l, s] with a zero value row for s = softmax(l) * Z / (Z + e^s), Z = e^lse."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 1, 7, generator=generator, dtype=torch.float64)
    values = torch.randn(1, 3, 7, 5, generator=generator, dtype=torch.float64)
    for sinks in (torch.tensor([-30.0, 0.0, 30.0]), torch.randn(3, generator=generator)):
        with_sink_column = torch.cat([logits, sinks.double().view(1, 3, 1, 1)], -1).softmax(-1)[..., :-1] @ values
        out = attention.with_sinks(logits.softmax(-1) @ values, torch.logsumexp(logits, -1), sinks.double())
        assert torch.allclose(out, with_sink_column, atol=1e-12)
    # A sink far above every logit takes all the weight.
    drowned = attention.with_sinks(values[..., :1, :], torch.zeros(1, 3, 1), torch.full((3,), 50.0))
    assert drowned.abs().max() < 1e-20


def test_logsumexp_by_matmul_is_the_masked_logsumexp():
    generator = torch.Generator().manual_seed(2)
    query, key = torch.randn(1, 4, 1, 8, generator=generator), torch.randn(1, 2, 10, 8, generator=generator)
    mask = fill_mask(10, range(0, 6), torch.float32)
    expected = torch.logsumexp(query @ key.repeat_interleave(2, 1).transpose(2, 3) * 0.3 + mask, -1)
    assert torch.allclose(attention.logsumexp_by_matmul(query, key, mask, 0.3), expected, atol=1e-6)


def decode_logits(model, ids: torch.Tensor, slots: int) -> torch.Tensor:
    """The logits of one decode step at position len(ids) - 1, after a prefill of the rest into a static cache."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=slots)
    positions = torch.arange(ids.shape[1], device=ids.device)[None]
    with torch.no_grad():
        model(input_ids=ids[:, :-1], position_ids=positions[:, :-1], past_key_values=cache, use_cache=True)
        return model(input_ids=ids[:, -1:], position_ids=positions[:, -1:], past_key_values=cache).logits[0, -1]


# Prefill lengths: tiny gpt-oss's sliding layers (window 32) part-filled, just full, full and rolled.
PREFILLS = [5, 20, 31, 32, 45]


@pytest.mark.parametrize("family", sorted(CARDS))
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_in_the_model_matches_eager_attention_at_every_fill_level(family, kernel):
    torch.manual_seed(0)
    model = models.load_model(random_model(family), "float32", "cpu").model
    ids = torch.randint(3, 1000, (1, max(PREFILLS) + 1), generator=torch.Generator().manual_seed(3))
    for prefill in PREFILLS:
        model.set_attn_implementation("eager")
        expected = decode_logits(model, ids[:, : prefill + 1], slots=48)
        model.set_attn_implementation(attention.register(model, kernel))
        got = decode_logits(model, ids[:, : prefill + 1], slots=48)
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max(), prefill


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_registers_for_a_model_without_sdpa(kernel):
    """transformers checks implementation names by substring; gpt-oss has no SDPA (its sinks)."""
    model = models.load_model(random_model("gpt_oss"), "float32", "cpu").model
    name = attention.register(model, kernel)
    model.set_attn_implementation(name)
    assert model.config._attn_implementation == name
    assert "sdpa" not in name and "flex_attention" not in name
    llama = models.load_model(random_model("llama"), "float32", "cpu").model
    assert attention.register(llama, kernel).startswith("deploybench_") and "sdpa" in attention.register(llama, kernel)


def test_default_kernel_keeps_todays_implementation_names():
    assert attention.implementation_name(True) == attention.GQA_SDPA_PREFILL
    assert attention.implementation_name(False, DecodeAttentionKernel.GQA_MATMUL) == attention.GQA_EAGER
