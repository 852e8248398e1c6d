"""On-device sampling: the same filtered distribution as transformers' warpers, drawn exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from deploybench.engines import models
from deploybench.engines.compiled_loop.sampling import filter_logits, make_sampler
from deploybench.plan.spec import DecodingMode, ModelEntry, standard_decoding

TINY_LLAMA = "workflow/architectures/tiny-llama.json"


def transformers_filter(logits, temperature, top_k, top_p):
    scores = TemperatureLogitsWarper(temperature)(None, logits.float())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(0.7, 50, 1.0), (0.7, 0, 0.9), (1.0, 0, 0.95), (0.3, 0, 0.8), (1.3, 5, 0.5), (0.7, 50, 0.9)],
)
def test_filter_equals_transformers_warpers(temperature, top_k, top_p):
    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0)) * 4
    ours = filter_logits(logits, temperature, top_k, top_p)
    theirs = transformers_filter(logits, temperature, top_k, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.allclose(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)])
    assert (~torch.isinf(ours)).sum(-1).min() >= 1


def test_generate_applies_temperature_then_top_k_then_top_p():
    """The order filter_logits follows is the order generate() builds its warpers in."""
    model = models.load_model(ModelEntry(source="random", architecture=TINY_LLAMA), "float32", "cpu").model
    config = GenerationConfig(do_sample=True, temperature=0.7, top_k=50, top_p=0.9)
    processors = model._get_logits_processor(config, input_ids_seq_length=4, encoder_input_ids=None)
    kinds = [type(p) for p in processors if type(p) in (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)]
    assert kinds == [TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper]


def test_greedy_is_argmax():
    logits = torch.randn(2, 50)
    assert torch.equal(make_sampler(standard_decoding("greedy"))(logits), logits.argmax(-1))


def test_draws_follow_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    sample = make_sampler(DecodingMode(do_sample=True, temperature=1.0, top_p=0.9))  # drops the 0.05 token
    torch.manual_seed(0)
    draws = torch.stack([sample(logits) for _ in range(20000)]).flatten()
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    expected = torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95
    assert torch.allclose(freq, expected, atol=0.015), freq
    assert freq[3] == 0
