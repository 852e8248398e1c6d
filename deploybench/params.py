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


def _expert_modules(model) -> list[tuple[str, torch.nn.Module, int]]:
    """Modules holding stacked expert weights: (name, module, n_experts)."""
    found = []
    for name, module in model.named_modules():
        n_experts = getattr(module, "num_experts", None)
        if isinstance(n_experts, int) and n_experts > 1 and type(module).__name__.endswith("Experts"):
            found.append((name, module, n_experts))
    return found


def count_params(model) -> dict:
    """{'total_params', 'active_params', 'all_experts_params'} from a (meta or real) model."""
    config = model.config
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()

    top_k = getattr(config, "num_experts_per_tok", None)
    expert_modules = _expert_modules(model)
    if top_k and not expert_modules:
        raise ParamCountError(
            f"{config.model_type}: config says mixture-of-experts (num_experts_per_tok={top_k}) but no "
            "stacked experts module was found; set active_params in the model's config entry"
        )

    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embedding
    expert_params = {}
    for _, module, n_experts in expert_modules:
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
        "active_params": int(round(active)),
        "all_experts_params": int(every_expert),  # what a token multiplies when every expert is computed
    }


def count_from_config(config) -> dict:
    return count_params(build_meta_model(config))
