"""Decode experts paths: each computes what grouped_mm computes, and only decode calls take it."""

from __future__ import annotations

import pytest
import torch

from deploybench.analytic import params
from deploybench.engines import models
from deploybench.engines.compiled_loop import decode_experts
from deploybench.engines.timing import generation_config, timed_generate
from deploybench.enums import CacheImplementation, DecodeExperts
from deploybench.plan.spec import standard_decoding
from tests.fixtures.compare import greedy_sequences, randomise_zero_parameters
from tests.unit.test_measure import random_model

RELATIVE_TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}


def gpt_oss(dtype: str = "float32"):
    torch.manual_seed(0)
    return randomise_zero_parameters(models.load_model(random_model("gpt_oss"), dtype, "cpu").model)


def routed(tokens: int, experts_module, dtype, seed: int):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, experts_module.hidden_size, generator=generator).to(dtype)
    k = 2  # tiny gpt-oss: top-2 of 8
    index = torch.stack([torch.randperm(experts_module.num_experts, generator=generator)[:k] for _ in range(tokens)])
    weights = torch.rand(tokens, k, generator=generator).softmax(-1).to(dtype)
    return hidden, index, weights


@pytest.mark.parametrize("dtype", sorted(RELATIVE_TOLERANCE))
@pytest.mark.parametrize("path", [p.value for p in DecodeExperts])
@pytest.mark.parametrize("tokens", [1, 5])
def test_every_path_computes_grouped_mm(path, tokens, dtype):
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    module = params.expert_modules(gpt_oss(dtype))[0][1]
    hidden, index, weights = routed(tokens, module, models.TORCH_DTYPES[dtype], seed=tokens)
    with torch.no_grad():
        expected = ALL_EXPERTS_FUNCTIONS["grouped_mm"](module, hidden, index, weights).float()
        got = decode_experts.decode_function(path)(module, hidden, index, weights).float()
    assert got.shape == expected.shape == (tokens, module.hidden_size)
    assert (got - expected).abs().max() <= RELATIVE_TOLERANCE[dtype] * expected.abs().max()


def test_only_decode_calls_take_the_decode_path(monkeypatch):
    model = gpt_oss()
    seen = []
    real = decode_experts.gathered_reduction_forward

    def spy(self, hidden_states, top_k_index, top_k_weights):
        seen.append(hidden_states.shape[0])
        return real(self, hidden_states, top_k_index, top_k_weights)

    monkeypatch.setattr(decode_experts, "gathered_reduction_forward", spy)
    assert decode_experts.install(model, DecodeExperts.GATHERED_REDUCTION) == model.config.num_hidden_layers
    ids = torch.randint(3, 1000, (1, 12), generator=torch.Generator().manual_seed(4))
    config = generation_config(standard_decoding("greedy"), 4, 0, CacheImplementation.STATIC)
    timed_generate(model, ids, torch.ones_like(ids), config, "cpu", seed=0, clock=False)
    layers = model.config.num_hidden_layers
    assert seen == [1] * (3 * layers)  # the three decode steps; the 12-token prefill kept grouped_mm


@pytest.mark.parametrize("path", [p.value for p in DecodeExperts])
def test_a_model_with_a_decode_path_generates_the_same_tokens(path):
    reference, model = gpt_oss(), gpt_oss()
    decode_experts.install(model, path)
    ids = torch.randint(3, 1000, (1, 20), generator=torch.Generator().manual_seed(5))
    assert torch.equal(greedy_sequences(reference, ids, 10), greedy_sequences(model, ids, 10))


def test_no_path_leaves_the_model_alone():
    model = gpt_oss()
    classes = [type(m) for m in model.modules()]
    assert decode_experts.install(model, None) == 0
    assert [type(m) for m in model.modules()] == classes
