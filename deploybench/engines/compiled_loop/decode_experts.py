"""Mixture-of-experts paths for the decode steps alone, the prefill keeping the model's own.

At batch 1 a decode step routes one token to k experts (gpt-oss-20b: 4 of 32). transformers' default
grouped_mm runs a grouped GEMM with one row per routed expert; on an H200 the expert GEMMs and the
attention products stream far below the copy bandwidth (reference-run/h200-2026-11-29/README.md, "Why
gpt-oss-20b is far from its routed-experts roofline"). Alternatives:

- batched_mm (transformers): gathers the routed experts' weights (a copy) and runs one bmm. It
  ran out of memory at a 2048-token prefill on an H200 (the same README), so it is usable only
  here, for the decode steps.
- gathered_reduction (deploybench): each routed expert's product written as a broadcast product
  and sum over its weight rows picked by expert id; inductor fuses the gather into the reduction,
  so the routed weights are read once, in place, with no copy.

`install` moves the model's experts modules to a subclass whose forward takes the chosen path when a
call sees at most `decode_tokens` tokens (a decode step at batch 1 feeds one) and the model's
experts_implementation otherwise. All read only the routed experts.
"""

from __future__ import annotations

import torch

from deploybench.analytic import params
from deploybench.engines.compiled_loop import module_swap
from deploybench.enums import DecodeExperts

TAG = "DecodeExperts"


def gathered_reduction_forward(self, hidden_states, top_k_index, top_k_weights):
    """hidden_states (tokens, hidden); top_k_index, top_k_weights (tokens, k). Returns (tokens, hidden)."""
    tokens, hidden = hidden_states.shape
    k = top_k_index.shape[-1]
    ids = top_k_index.reshape(-1)
    x = hidden_states.repeat_interleave(k, dim=0)  # one row per (token, routed expert)
    up = _gathered_linear(x, self.gate_up_proj if self.has_gate else self.up_proj, ids, self.is_transposed)
    if self.has_bias:
        up = up + (self.gate_up_proj_bias if self.has_gate else self.up_proj_bias)[ids]
    up = self._apply_gate(up) if self.has_gate else self.act_fn(up)
    down = _gathered_linear(up, self.down_proj, ids, self.is_transposed)
    if self.has_bias:
        down = down + self.down_proj_bias[ids]
    weighted = down * top_k_weights.reshape(-1, 1).to(down.dtype)
    return weighted.view(tokens, k, hidden).sum(dim=1).to(hidden_states.dtype)


def _gathered_linear(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, is_transposed: bool) -> torch.Tensor:
    """Row s of x times expert ids[s]'s matrix, accumulated in float32 as a matmul would.

    weights: (experts, in, out) when transposed, else (experts, out, in) as nn.Linear stores them.
    """
    chosen = weights[ids].float()
    if is_transposed:
        return (x.float().unsqueeze(-1) * chosen).sum(dim=1).to(x.dtype)
    return (chosen * x.float().unsqueeze(1)).sum(dim=-1).to(x.dtype)


def _transformers_path(name: str):
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    return ALL_EXPERTS_FUNCTIONS[name]


def decode_function(path: DecodeExperts):
    path = DecodeExperts(path)
    if path is DecodeExperts.GATHERED_REDUCTION:
        return gathered_reduction_forward
    return _transformers_path(path.value)


def _by_phase_forward(self, hidden_states, top_k_index, top_k_weights):
    if hidden_states.shape[0] <= self.decode_tokens:
        return self.decode_path(self, hidden_states, top_k_index, top_k_weights)
    return super(type(self), self).forward(hidden_states, top_k_index, top_k_weights)


def install(model: torch.nn.Module, path: DecodeExperts | None, decode_tokens: int = 1) -> int:
    """Route decode calls (<= decode_tokens tokens) of every experts module through `path`; None: leave the
    model's. Returns how many modules were changed."""
    if path is None:
        return 0
    modules = [module for _, module, _ in params.expert_modules(model)]
    function = decode_function(path)
    for module in modules:
        module_swap.specialise(module, TAG, _by_phase_forward, decode_path=function, decode_tokens=decode_tokens)
    return len(modules)
