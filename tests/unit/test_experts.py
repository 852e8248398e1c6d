"""The study's all-experts MoE path: same output as the routed paths, every expert multiplied."""

from __future__ import annotations

import pytest
import torch

from deploybench.engines import experts, models

CARD = "workflow/architectures/tiny-gpt-oss.json"


def _logits(implementation: str, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)  # the same random weights for every implementation
    model = AutoModelForCausalLM.from_config(
        models.load_card(CARD), dtype=torch.float32, experts_implementation=implementation, attn_implementation="eager"
    )
    assert model.config._experts_implementation == implementation
    with torch.no_grad():
        return model.eval()(ids).logits


def test_all_experts_equals_the_routed_paths():
    experts.register()
    ids = torch.randint(3, 1000, (1, 24), generator=torch.Generator().manual_seed(1))
    routed = _logits("grouped_mm", ids)
    torch.testing.assert_close(_logits("all_experts", ids), routed, rtol=1e-5, atol=1e-5)


def test_all_experts_multiplies_every_token_by_every_expert(monkeypatch):
    experts.register()
    shapes = []
    real_bmm = torch.bmm

    def recording_bmm(a, b):
        shapes.append((tuple(a.shape), tuple(b.shape)))
        return real_bmm(a, b)

    monkeypatch.setattr(torch, "bmm", recording_bmm)
    _logits("all_experts", torch.randint(3, 1000, (1, 24)))
    card = models.load_card(CARD)
    per_layer = [s for s in shapes if s[0][0] == card.num_local_experts]
    # up and down projection per layer, each over all 8 experts and all 24 tokens
    assert len(per_layer) == 2 * card.num_hidden_layers
    assert all(a[1] == 24 for a, _ in per_layer)


@pytest.mark.parametrize(
    "moe, implementation, reads",
    [(False, None, "n/a"), (True, "grouped_mm", "routed"), (True, "eager", "routed"), (True, "all_experts", "all")],
)
def test_which_experts_a_step_reads_follows_the_implementation(moe, implementation, reads):
    assert experts.experts_read_per_token(moe, implementation) == reads
