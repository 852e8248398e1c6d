"""Fused projections: the model computes what it computed unfused, from fewer, larger GEMVs, and keeps no
copy of the unfused weights."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch

from deploybench.engines import models
from deploybench.engines.compiled_loop import fusion, module_swap
from tests.fixtures.compare import greedy_sequences, randomise_zero_parameters
from tests.unit.test_measure import CARDS, random_model

# Max |fused - unfused| logit over the max |logit|: float32 must agree to rounding; bf16 to a few ulps.
RELATIVE_TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}
EXPECTED = {"llama": ["qkv", "gate_up"], "qwen3": ["qkv", "gate_up"], "gpt_oss": ["qkv"]}


def fused_and_reference(family: str, dtype: str):
    torch.manual_seed(0)
    model = randomise_zero_parameters(models.load_model(random_model(family), dtype, "cpu").model)
    reference = copy.deepcopy(model)
    result = fusion.fuse(model, ["qkv", "gate_up"])
    return model, reference, result


def prefill_and_step(model, ids):
    """Logits of a prefill and of one decode step, and the static cache they wrote."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + 1)
    with torch.no_grad():
        prefill = model(input_ids=ids, past_key_values=cache, use_cache=True).logits
        step = model(
            input_ids=ids[:, -1:], position_ids=torch.tensor([[ids.shape[1]]]), past_key_values=cache, use_cache=True
        ).logits
    return prefill.float(), step.float(), cache


@pytest.mark.parametrize("dtype", sorted(RELATIVE_TOLERANCE))
@pytest.mark.parametrize("family", sorted(CARDS))
def test_fused_model_computes_the_unfused_logits_and_kv_cache(family, dtype):
    model, reference, result = fused_and_reference(family, dtype)
    assert result.applied == EXPECTED[family]
    ids = torch.randint(3, 1000, (1, 40), generator=torch.Generator().manual_seed(1))  # past tiny gpt-oss's window
    fused_out, reference_out = prefill_and_step(model, ids), prefill_and_step(reference, ids)
    tolerance = RELATIVE_TOLERANCE[dtype]
    for fused_logits, reference_logits in zip(fused_out[:2], reference_out[:2]):
        scale = reference_logits.abs().max()
        assert (fused_logits - reference_logits).abs().max() <= tolerance * scale
    for fused_layer, reference_layer in zip(fused_out[2].layers, reference_out[2].layers):
        for kind in ("keys", "values"):
            fused_kv, reference_kv = getattr(fused_layer, kind).float(), getattr(reference_layer, kind).float()
            assert (fused_kv - reference_kv).abs().max() <= tolerance * reference_kv.abs().max()


@pytest.mark.parametrize("family", sorted(CARDS))
def test_fused_model_generates_the_same_tokens(family):
    model, reference, _ = fused_and_reference(family, "float32")
    ids = torch.randint(3, 1000, (1, 24), generator=torch.Generator().manual_seed(2))
    assert torch.equal(greedy_sequences(model, ids, 10), greedy_sequences(reference, ids, 10))


@pytest.mark.parametrize("family", sorted(CARDS))
def test_unfused_weights_are_freed_and_the_parameters_are_the_same(family):
    torch.manual_seed(0)
    model = models.load_model(random_model(family), "float32", "cpu").model
    before = sum(p.numel() for p in model.parameters())
    parts = [
        weakref.ref(getattr(m, name).weight)
        for m in model.modules()
        for name in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
        if isinstance(getattr(m, name, None), torch.nn.Linear)
    ]
    assert parts
    fusion.fuse(model, ["gate_up", "qkv"])
    gc.collect()
    assert all(ref() is None for ref in parts)  # nothing holds an unfused weight any more
    unfused = {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}
    assert not [n for n, _ in model.named_parameters() if unfused & set(n.split("."))]
    assert sum(p.numel() for p in model.parameters()) == before


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_each_layers_unfused_weights_are_freed_before_the_next_layer_fuses(family, monkeypatch):
    """The peak while fusing is one layer's fused weight above the model, not every layer's (on an 80 GB card
    Qwen3-32B's gate_up ran out of memory when the unfused Linears lived until the loop ended)."""
    torch.manual_seed(0)
    model = models.load_model(random_model(family), "float32", "cpu").model
    concatenate, earlier, alive_at_each_layer = fusion._concatenated, [], []

    def watched(module, *names):
        alive_at_each_layer.append(sum(ref() is not None for ref in earlier))
        earlier.extend(weakref.ref(getattr(module, n).weight) for n in names)
        return concatenate(module, *names)

    monkeypatch.setattr(fusion, "_concatenated", watched)
    fusion.fuse(model, ["gate_up"])
    assert len(alive_at_each_layer) == model.config.num_hidden_layers > 1
    assert alive_at_each_layer == [0] * len(alive_at_each_layer)


def test_fusing_again_changes_nothing():
    torch.manual_seed(0)
    model = models.load_model(random_model("qwen3"), "float32", "cpu").model
    first = fusion.fuse(model, ["qkv", "gate_up"])
    weight = model.model.layers[0].self_attn.qkv_proj.weight
    again = fusion.fuse(model, ["gate_up", "qkv"])
    assert again.applied == first.applied == ["qkv", "gate_up"]
    assert model.model.layers[0].self_attn.qkv_proj.weight is weight


def test_gpt_oss_fuses_its_biased_qkv_and_says_why_not_its_experts():
    _, _, result = fused_and_reference("gpt_oss", "float32")
    assert result.applied == ["qkv"]
    assert len(result.skipped) == 1 and result.skipped[0].startswith("gate_up:") and "gate_up_proj" in result.skipped[0]


def test_gpt_oss_attention_biases_are_fused():
    model, reference, _ = fused_and_reference("gpt_oss", "float32")
    fused, original = model.model.layers[0].self_attn, reference.model.layers[0].self_attn
    expected = torch.cat([original.q_proj.bias, original.k_proj.bias, original.v_proj.bias])
    assert expected.any() and torch.equal(fused.qkv_proj.bias, expected)
    assert isinstance(fused, type(original)) and module_swap.tag_of(fused) == fusion.QKV_TAG


def test_an_attention_class_whose_forward_is_not_known_is_left_unfused():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "mistral", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config)
    result = fusion.fuse(model, ["qkv"])
    assert result.applied == [] and result.skipped[0].startswith("qkv: no module of a supported class")
    assert isinstance(model.model.layers[0].self_attn.q_proj, torch.nn.Linear)


def test_applicable_reads_a_meta_model_without_changing_it():
    from deploybench.analytic import params

    for family, expected in EXPECTED.items():
        meta = params.build_meta_model(models.load_card(CARDS[family]))
        assert fusion.applicable(meta) == expected
        assert all(module_swap.tag_of(m) is None for m in meta.modules())
