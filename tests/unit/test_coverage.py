"""Expert coverage at batch B: distinct experts per layer per decode step, from the routers' choices."""

from __future__ import annotations

import pytest
import torch
from transformers.models.gpt_oss import modeling_gpt_oss

from deploybench.engines import batch as batching
from deploybench.engines import models
from deploybench.engines.timing import generation_config
from deploybench.instruments import coverage
from deploybench.plan.spec import standard_decoding
from tests.unit.test_measure import random_model


@pytest.mark.parametrize("batch, expected", [(1, 4.0), (8, 21.0), (32, 31.6)])
def test_uniform_prediction_for_32_experts_4_per_token(batch, expected):
    assert coverage.uniform_coverage(32, 4, batch) == pytest.approx(expected, abs=0.05)


def test_uniform_prediction_edges():
    assert coverage.uniform_coverage(8, 8, 5) == 8  # every token reads every expert
    assert coverage.uniform_coverage(32, 4, 0) == 0
    assert coverage.uniform_coverage(32, 4, 2) == pytest.approx(32 * (1 - (28 / 32) ** 2))  # 7.5


def test_distinct_experts_of_known_choices():
    same = torch.tensor([[1, 2], [2, 1], [1, 2]])  # three tokens, the same two experts
    disjoint = torch.tensor([[0, 1], [2, 3], [4, 5]])
    assert coverage.distinct_experts(torch.stack([same, disjoint]), 8).tolist() == [2, 6]


class StubTopKRouter(torch.nn.Module):
    """A router whose choices are given: choose(tokens) -> (tokens, k) indices."""

    def __init__(self, choose, n_experts: int, top_k: int):
        super().__init__()
        self.choose, self.num_experts, self.top_k = choose, n_experts, top_k

    def forward(self, hidden):
        indices = self.choose(hidden.shape[0])
        scores = torch.full(indices.shape, 1 / self.top_k)
        return torch.zeros(hidden.shape[0], self.num_experts), scores, indices


class StubMoE(torch.nn.Module):
    def __init__(self, choose, layers=3, n_experts=32, top_k=4):
        super().__init__()
        self.routers = torch.nn.ModuleList(StubTopKRouter(choose, n_experts, top_k) for _ in range(layers))

    def forward(self, tokens: int):
        for router in self.routers:
            router(torch.zeros(tokens, 1))


def _recorded(model, batch, context=16, steps=5):
    with coverage.RouterRecorder(model) as recorder:
        model(batch * context)  # the prefill: every prompt token at once
        for _ in range(steps):
            model(batch)  # a decode step: one token per sequence
    assert all(not r._forward_hooks for r in model.routers)  # the hooks are gone after the run
    return recorder


def _same_four(tokens):
    return torch.tensor([[3, 9, 17, 30]]).expand(tokens, 4)


def _disjoint(tokens):  # token t -> experts 4t .. 4t + 3 (mod 32)
    return (torch.arange(tokens)[:, None] * 4 + torch.arange(4)) % 32


@pytest.mark.parametrize(
    "choose, batch, expected",
    [
        (_same_four, 1, 4.0),
        (_same_four, 16, 4.0),  # all tokens to the same 4 experts
        (_disjoint, 1, 4.0),
        (_disjoint, 3, 12.0),  # disjoint choices: B x k
        (_disjoint, 8, 32.0),
        (_disjoint, 20, 32.0),  # ... capped at E
    ],
)
def test_known_router_choices(choose, batch, expected):
    recorder = _recorded(StubMoE(choose), batch)
    result = recorder.coverage(batch)
    assert result.experts_touched_per_layer == expected
    assert result.per_layer == (expected,) * 3 and result.per_step == (expected,) * 5
    assert result.decode_steps == 5 and result.n_experts == 32 and result.top_k == 4
    assert result.uniform_prediction == pytest.approx(coverage.uniform_coverage(32, 4, batch))


def test_choices_stay_on_the_device_until_reduced():
    recorder = _recorded(StubMoE(_disjoint), 3)
    kept = [t for layer in recorder.calls for t in layer]
    assert len(kept) == 3 * 5 and all(isinstance(t, torch.Tensor) and t.shape == (3, 4) for t in kept)


def test_mean_over_steps_of_varying_choices():
    steps = iter([_same_four, _disjoint, _disjoint])  # decode steps touching 4, then 8, then 8 experts at B = 2
    current = {"choose": _same_four}

    def choose(tokens):
        return current["choose"](tokens)

    model = StubMoE(choose, layers=1)
    with coverage.RouterRecorder(model) as recorder:
        model(2 * 10)
        for step in steps:
            current["choose"] = step
            model(2)
    result = recorder.coverage(2)
    assert result.per_step == (4.0, 8.0, 8.0) and result.experts_touched_per_layer == pytest.approx(20 / 3)


def test_malformed_recordings_are_refused():
    with pytest.raises(coverage.CoverageError, match="no \\*TopKRouter"):
        coverage.RouterRecorder(torch.nn.Linear(2, 2))
    with pytest.raises(coverage.CoverageError, match="decode steps"):
        _recorded(StubMoE(_disjoint), 2, steps=0).coverage(2)  # a prefill only
    with pytest.raises(coverage.CoverageError, match="shapes"):
        _recorded(StubMoE(_disjoint), 2).coverage(4)  # steps of 2 tokens read as batch 4

    class LogitsOnlyTopKRouter(StubTopKRouter):
        def forward(self, hidden):
            return torch.zeros(hidden.shape[0], 4)

    model = StubMoE(_disjoint)
    model.routers[0] = LogitsOnlyTopKRouter(_disjoint, 32, 4)
    with pytest.raises(coverage.CoverageError, match="not \\(logits, scores, indices\\)"):
        _recorded(model, 1)


@pytest.fixture(scope="module")
def gpt_oss():
    torch.manual_seed(0)
    loaded = models.load_model(random_model("gpt_oss"), "float32", "cpu")
    return loaded


def _coverage_of(loaded, batch, gen=6, context=24):
    ids, mask = batching.batch_tensors(batching.prompt_batch(loaded, loaded.model.config, context, batch, 0), "cpu")
    return coverage.record_generate(loaded.model, ids, mask, generation_config(standard_decoding("greedy"), gen, 0))


def test_tiny_gpt_oss_at_batch_1_touches_exactly_top_k(gpt_oss):
    result = _coverage_of(gpt_oss, 1)
    config = gpt_oss.model.config
    assert len(coverage.router_modules(gpt_oss.model)) == config.num_hidden_layers
    assert result.experts_touched_per_layer == config.num_experts_per_tok == 2
    assert result.per_layer == (2.0,) * config.num_hidden_layers and result.decode_steps == 5


def test_tiny_gpt_oss_at_batch_b_is_between_k_and_the_cap(gpt_oss):
    result = _coverage_of(gpt_oss, 4)
    assert 2 < result.experts_touched_per_layer <= min(4 * 2, 8)


def test_tiny_gpt_oss_with_a_forced_router(gpt_oss, monkeypatch):
    """The real model's routing replaced by known choices: row b of a step goes to experts 2b, 2b + 1."""

    def forward(self, hidden_states):
        tokens = hidden_states.shape[0]
        indices = (torch.arange(tokens)[:, None] * 2 + torch.arange(2)) % self.num_experts
        logits = torch.zeros(tokens, self.num_experts)
        return logits, torch.full((tokens, 2), 0.5), indices

    monkeypatch.setattr(modeling_gpt_oss.GptOssTopKRouter, "forward", forward)
    assert _coverage_of(gpt_oss, 3).experts_touched_per_layer == 6.0  # B x k
    assert _coverage_of(gpt_oss, 6).experts_touched_per_layer == 8.0  # capped at E
