"""Mixture-of-experts code paths, and which expert weights each one reads per token.

transformers 5.x dispatches a MoE layer's experts through its `ExpertsInterface` (grouped_mm by default,
batched_mm, or the eager loop over the experts the router hit): each reads only the routed experts.
The study ran transformers 4.55, whose gpt-oss inference path multiplied every token by all 32
experts with dense batched matrix products and zeroed the unrouted ones through the routing weights.
`all_experts` registers that path, so a cell can reproduce the study's figures and say why they differ.
"""

from __future__ import annotations

import torch

from deploybench.enums import ExpertsImplementation, ExpertsRead


def all_experts_forward(
    self: torch.nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
) -> torch.Tensor:
    """Every expert for every token (transformers 4.55's gpt-oss inference path), routing weights zero elsewhere.

    hidden_states (tokens, hidden); top_k_index, top_k_weights (tokens, k). Returns (tokens, hidden).
    """
    n_experts = self.num_experts
    tokens, hidden = hidden_states.shape
    routing = torch.zeros(tokens, n_experts, dtype=top_k_weights.dtype, device=hidden_states.device)
    routing.scatter_(1, top_k_index, top_k_weights)  # dense (tokens, experts): zero for unrouted experts
    stacked = hidden_states.unsqueeze(0).expand(n_experts, tokens, hidden)
    up_weights = self.gate_up_proj if self.has_gate else self.up_proj
    up = _batched(stacked, up_weights, self.is_transposed)
    if self.has_bias:
        up = up + (self.gate_up_proj_bias if self.has_gate else self.up_proj_bias)[:, None, :]
    up = self._apply_gate(up) if self.has_gate else self.act_fn(up)
    down = _batched(up, self.down_proj, self.is_transposed)
    if self.has_bias:
        down = down + self.down_proj_bias[:, None, :]
    weighted = down * routing.transpose(0, 1).unsqueeze(-1).to(down.dtype)
    return weighted.sum(dim=0).to(hidden_states.dtype)


def _batched(x: torch.Tensor, weights: torch.Tensor, is_transposed: bool) -> torch.Tensor:
    """(experts, tokens, in) x per-expert weights -> (experts, tokens, out)."""
    # transposed layout stores (experts, in, out), the default (experts, out, in), as nn.Linear does
    return torch.bmm(x, weights if is_transposed else weights.transpose(1, 2))


def register() -> None:
    """Make `experts_implementation: all_experts` loadable (idempotent)."""
    from transformers.integrations.moe import ExpertsInterface

    ExpertsInterface.register(ExpertsImplementation.ALL_EXPERTS.value, all_experts_forward)


def experts_read_per_token(is_moe: bool, implementation: str | None) -> ExpertsRead:
    if not is_moe:
        return ExpertsRead.NONE
    return ExpertsRead.ALL if implementation == ExpertsImplementation.ALL_EXPERTS else ExpertsRead.ROUTED
