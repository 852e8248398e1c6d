"""Total and active parameter counts, read from the model structure on the meta device.

Active parameters follow the model-card convention: every weight a token multiplies, the
input-embedding lookup excluded (a lookup reads one row, it multiplies nothing). Routed-expert
weights count with the fraction top_k / n_experts.
"""

from __future__ import annotations

import torch


class ParamCountError(ValueError):
    """The counter cannot understand this model: set `active_params` in its config entry."""


def build_meta_model(config):
    """The model skeleton on the meta device: shapes without memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def expert_modules(model) -> list[tuple[str, torch.nn.Module, int]]:
    """Modules holding stacked expert weights: (name, module, n_experts)."""
    found = []
    for name, module in model.named_modules():
        n_experts = getattr(module, "num_experts", None)
        if isinstance(n_experts, int) and n_experts > 1 and type(module).__name__.endswith("Experts"):
            found.append((name, module, n_experts))
    return found


def count_params(model, active_override: int | None = None) -> dict:
    """{'total_params', 'active_params', 'all_experts_params'} from a (meta or real) model.

    `active_override` (a model entry's active_params) replaces the counted active figure; it also lets
    a mixture-of-experts model whose experts the counter cannot find be counted (every weight then
    counts towards all_experts_params)."""
    config = model.config
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()

    top_k = getattr(config, "num_experts_per_tok", None)
    experts = expert_modules(model)
    if top_k and not experts and active_override is None:
        raise ParamCountError(
            f"{config.model_type}: config says mixture-of-experts (num_experts_per_tok={top_k}) but no "
            "stacked experts module was found; set active_params in the model's config entry"
        )

    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embedding
    expert_params = {}
    for _, module, n_experts in experts:
        for param in module.parameters():
            expert_params[id(param)] = top_k / n_experts

    active = every_expert = 0.0
    seen.clear()
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        if param is embedding and not tied:
            continue  # a lookup, not a multiplication
        active += param.numel() * expert_params.get(id(param), 1.0)
        every_expert += param.numel()
    return {
        "total_params": int(total),
        "active_params": int(round(active)) if active_override is None else int(active_override),
        "all_experts_params": int(every_expert),  # what a token multiplies when every expert is computed
    }


def count_from_config(config) -> dict:
    return count_params(build_meta_model(config))


def expert_split(model, active_override: int | None = None) -> dict:
    """How the weights a token multiplies split into dense and routed-expert parts (meta or real model).

    {'dense_params': every weight a token multiplies outside the expert modules (attention, router,
    norms, output head; the untied input-embedding lookup excluded, as in count_params),
    'expert_params': all expert weights, 'params_per_expert': one expert of one layer (its biases
    included), 'moe_layers', 'n_experts', 'top_k'}. A dense model has expert_params 0 and moe_layers 0.
    Identities: active_params = dense_params + top_k x params_per_expert x moe_layers, and
    all_experts_params = dense_params + expert_params. A mixture-of-experts model whose experts the
    counter cannot find, with `active_override`, is split as dense: a token reads its active_params.
    """
    counts = count_params(model, active_override)  # raises ParamCountError for a MoE config it cannot read
    modules = expert_modules(model)
    if not modules and getattr(model.config, "num_experts_per_tok", None):  # unreadable, overridden
        dense = {"dense_params": counts["active_params"], "expert_params": 0, "params_per_expert": 0}
        return dense | {"moe_layers": 0, "n_experts": 0, "top_k": 0}
    per_expert = set()
    expert_params = 0
    for name, module, n_experts in modules:
        size = sum(p.numel() for p in module.parameters())
        if size % n_experts:
            raise ParamCountError(f"{name}: {size} expert parameters do not split evenly over {n_experts} experts")
        per_expert.add((size // n_experts, n_experts))
        expert_params += size
    if len(per_expert) > 1:
        raise ParamCountError(f"expert modules differ in size or count: {sorted(per_expert)}")
    params_per_expert, n_experts = per_expert.pop() if per_expert else (0, 0)
    return {
        "dense_params": counts["all_experts_params"] - expert_params,
        "expert_params": expert_params,
        "params_per_expert": params_per_expert,
        "moe_layers": len(modules),
        "n_experts": n_experts,
        "top_k": (getattr(model.config, "num_experts_per_tok", None) or 0) if modules else 0,
    }
