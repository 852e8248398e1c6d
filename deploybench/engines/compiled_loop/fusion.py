"""Fused projections: q/k/v in one weight, gate/up in one weight, built once after load.

At batch 1 every projection is a GEMV, and small ones stream far below the copy bandwidth: on an
H200, Qwen3-32B's k_proj and v_proj [1024, 5120] reached a fraction of the large matrices' rate
(reference-run/h200-2026-11-29/README.md, "Why Qwen3-32B compiled stays at 64%"). Concatenating the
weights that multiply the same input makes one larger GEMV per layer (and one kernel launch instead
of two or three). The fused module's forward is the
transformers layer's own, with one matmul split into views; each fused weight replaces its parts,
which are freed (no copy of the unfused weights stays).

Applies to: the attention projections of Llama (Yi), Qwen3 (q_norm and k_norm run after the split,
as before) and gpt-oss (with its attention biases), and the dense MLPs of Llama and Qwen3. Not to
gpt-oss's experts: they already hold gate and up as one stacked tensor (gate_up_proj, interleaved),
and are not nn.Linear.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch

from deploybench.engines.compiled_loop import module_swap
from deploybench.enums import Fusion

QKV_TAG = "FusedQKV"
GATE_UP_TAG = "FusedGateUp"

# What each supported attention class passes its attention function beside the tensors (copied from
# its forward). A class not listed is left unfused: its forward may do something this one does not.
_ATTENTION_EXTRAS = {
    "LlamaAttention": lambda m: {},
    "Qwen3Attention": lambda m: {"sliding_window": m.sliding_window},
    "GptOssAttention": lambda m: {"sliding_window": m.sliding_window, "s_aux": m.sinks},
}
_GATED_MLPS = {"LlamaMLP", "Qwen3MLP"}  # forward: down(act(gate(x)) * up(x))


@dataclass
class FusionResult:
    applied: list[str] = field(default_factory=list)  # fusions in effect, in Fusion order
    skipped: list[str] = field(default_factory=list)  # "<fusion>: <why it does not apply>"


@dataclass(frozen=True)
class _Plan:
    """One fusion: the layers it applies to, the nn.Linear parts it joins, and the forward that uses them."""

    tag: str
    classes: Collection[str]  # base class names it applies to
    parts: tuple[str, ...]
    fused: str  # the attribute of the joined nn.Linear
    forward: Callable
    shared: Callable[[torch.nn.Module], dict | None] = lambda m: None  # the fused class's, from one layer
    attributes: Callable[[torch.nn.Module], dict] = lambda m: {}  # the fused layer's own, read before its parts go


def fuse(model: torch.nn.Module, fusions) -> FusionResult:
    """Fuse what `fusions` asks for, in place; idempotent. Returns what is in effect and what did not apply."""
    result = FusionResult()
    for fusion in sorted({Fusion(f) for f in fusions}, key=list(Fusion).index):
        if _fuse(model, _PLANS[fusion]):
            result.applied.append(fusion.value)
        else:
            result.skipped.append(f"{fusion.value}: {_why_not(model, fusion)}")
    return result


def applicable(model: torch.nn.Module) -> list[str]:
    """The fusions `model` has modules for (works on a meta model: nothing is changed)."""
    modules = list(model.modules())
    return [f.value for f, plan in _PLANS.items() if any(_applies(m, plan) for m in modules)]


def _fuse(model, plan: _Plan) -> int:
    """Fuse every layer `plan` applies to; the number of layers fused (earlier fusions included)."""
    count = 0
    # Listed first (fusing edits the module tree), and only the layers themselves: a list of every module would
    # hold the unfused Linears until the loop ends, and with them a copy of every fused weight (Qwen3-32B's
    # gate_up: 32 GB more at the peak, out of memory on an 80 GB card).
    layers = [m for m in model.modules() if module_swap.tag_of(m) == plan.tag or _applies(m, plan)]
    for module in layers:
        if module_swap.tag_of(module) == plan.tag:
            count += 1
        else:
            attributes = plan.attributes(module)
            setattr(module, plan.fused, _concatenated(module, *plan.parts))
            module_swap.specialise(module, plan.tag, plan.forward, plan.shared(module), **attributes)
            count += 1
    return count


def _applies(module, plan: _Plan) -> bool:
    return module_swap.base_class(module).__name__ in plan.classes and _linears(module, *plan.parts)


def _family(module) -> dict:
    """What the fused forward takes from the layer's own modeling file: its rotary embedding, its eager
    attention (transformers' fallback) and the extra arguments its forward passes."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    base = module_swap.base_class(module)
    family = sys.modules[base.__module__]
    return {
        "apply_rotary": family.apply_rotary_pos_emb,
        "eager_attention": family.eager_attention_forward,
        "attention_extras": _ATTENTION_EXTRAS[base.__name__],
        "attention_functions": ALL_ATTENTION_FUNCTIONS,
    }


def _linears(module, *names) -> bool:
    parts = [getattr(module, n, None) for n in names]
    if not all(isinstance(p, torch.nn.Linear) for p in parts):
        return False
    # One input, one dtype, and a bias on all or none: otherwise the concatenation is not the same layer.
    return (
        len({p.in_features for p in parts}) == 1
        and len({(p.weight.dtype, p.weight.device) for p in parts}) == 1
        and len({p.bias is None for p in parts}) == 1
    )


def _concatenated(module, *names) -> torch.nn.Linear:
    """One nn.Linear whose output is the parts' outputs side by side; the parts are removed from `module`."""
    parts = [getattr(module, n) for n in names]
    first = parts[0].weight
    with torch.no_grad():
        weight = torch.cat([p.weight for p in parts], dim=0)
        bias = torch.cat([p.bias for p in parts], dim=0) if parts[0].bias is not None else None
    out_features = weight.shape[0]
    fused = torch.nn.Linear(first.shape[1], out_features, bias=bias is not None, device="meta", dtype=first.dtype)
    fused.weight = torch.nn.Parameter(weight, requires_grad=first.requires_grad)
    if bias is not None:
        fused.bias = torch.nn.Parameter(bias, requires_grad=first.requires_grad)
    del parts, first
    for name in names:
        delattr(module, name)  # the last references: the unfused weights are freed here
    if weight.is_cuda:
        torch.cuda.empty_cache()  # give their blocks back before the next layer allocates its fused weight
    return fused


def _qkv_forward(self, hidden_states, position_embeddings, attention_mask, past_key_values=None, **kwargs):
    """The attention layer's forward (Llama, Qwen3, gpt-oss) with q, k and v from one matmul."""
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)
    query, key, value = (t.view(hidden_shape) for t in self.qkv_proj(hidden_states).split(self.qkv_sizes, dim=-1))
    if hasattr(self, "q_norm"):  # Qwen3 normalises each head of q and k after the projection
        query, key = self.q_norm(query), self.k_norm(key)
    query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    cos, sin = position_embeddings
    query, key = self.apply_rotary(query, key, cos, sin)
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, self.layer_idx)
    attention = self.attention_functions.get_interface(self.config._attn_implementation, self.eager_attention)
    out, weights = attention(
        self,
        query,
        key,
        value,
        attention_mask,
        dropout=0.0 if not self.training else self.attention_dropout,
        scaling=self.scaling,
        **self.attention_extras(self),
        **kwargs,
    )
    out = out.reshape(*input_shape, -1).contiguous()
    return self.o_proj(out), weights


def _gate_up_forward(self, x):
    gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
    return self.down_proj(self.act_fn(gate) * up)


_QKV = ("q_proj", "k_proj", "v_proj")
_PLANS = {
    Fusion.QKV: _Plan(
        QKV_TAG,
        classes=_ATTENTION_EXTRAS,
        parts=_QKV,
        fused="qkv_proj",
        forward=_qkv_forward,
        shared=_family,
        attributes=lambda m: {"qkv_sizes": [getattr(m, name).out_features for name in _QKV]},
    ),
    Fusion.GATE_UP: _Plan(
        GATE_UP_TAG, classes=_GATED_MLPS, parts=("gate_proj", "up_proj"), fused="gate_up_proj", forward=_gate_up_forward
    ),
}
assert set(_PLANS) == set(Fusion), "every Fusion has a plan"


def _why_not(model, fusion: Fusion) -> str:
    if fusion is Fusion.GATE_UP and any(hasattr(m, "gate_up_proj") for m in model.modules()):
        return "the experts already hold gate and up in one stacked tensor (gate_up_proj), not as nn.Linear"
    supported = sorted(_PLANS[fusion].classes)
    return f"no module of a supported class ({', '.join(supported)}) with these projections as nn.Linear"
