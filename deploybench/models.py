"""Model loading: a pretrained checkpoint, or an architecture card built with random weights.

Latency, memory and energy at batch 1 depend on shapes, not weight values, so a random-weight
model of the full-size architecture answers deployment questions without downloading weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

TORCH_DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object | None  # None for random-weight models: prompts are seeded token ids
    weights_source: str
    model_ref: str


def load_card(path: str | Path):
    """Read an architecture card (HF config JSON) into a transformers config."""
    from transformers import AutoConfig

    card = json.loads(Path(path).read_text())
    model_type = card.pop("model_type")
    return AutoConfig.for_model(model_type, **card)


def model_config(model_spec: dict):
    """The transformers config of a model spec, without loading weights."""
    if model_spec["source"] == "random":
        config = load_card(model_spec["architecture"])
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(
            model_spec["id"],
            revision=model_spec.get("revision"),
            trust_remote_code=model_spec.get("trust_remote_code", False),
        )
    if model_spec.get("max_position_embeddings"):
        config.max_position_embeddings = model_spec["max_position_embeddings"]
    return config


def _impl_kwargs(model_spec: dict) -> dict:
    kwargs = {"attn_implementation": model_spec.get("attn_implementation") or "eager"}
    if model_spec.get("experts_implementation"):
        kwargs["experts_implementation"] = model_spec["experts_implementation"]
    return kwargs


def load_model(model_spec: dict, dtype: str, device: str) -> LoadedModel:
    """Build or load the model on `device` in `dtype`, in eval mode."""
    from transformers import AutoModelForCausalLM

    torch_dtype = TORCH_DTYPES[dtype]
    if model_spec["source"] == "random":
        config = model_config(model_spec)
        # Build straight on the target device and dtype: no full-size fp32 copy on the host.
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, **_impl_kwargs(model_spec))
        tokenizer = None
        ref = str(model_spec["architecture"])
    else:
        from transformers import AutoTokenizer

        common = {
            "revision": model_spec.get("revision"),
            "trust_remote_code": model_spec.get("trust_remote_code", False),
        }
        extra = {}
        if model_spec.get("max_position_embeddings"):
            extra["max_position_embeddings"] = model_spec["max_position_embeddings"]
        model = AutoModelForCausalLM.from_pretrained(
            model_spec["id"],
            dtype=torch_dtype,
            device_map=device,
            **common,
            **_impl_kwargs(model_spec),
            **extra,
        )
        tokenizer = AutoTokenizer.from_pretrained(model_spec["id"], **common)
        ref = model_spec["id"]
    model.eval()
    return LoadedModel(model, tokenizer, model_spec["source"], ref)


def implementations(model) -> dict:
    """Attention and experts implementations actually in use (recorded in every row)."""
    config = model.config
    experts = getattr(config, "_experts_implementation", None) if is_moe(config) else None
    return {
        "attn_implementation": getattr(config, "_attn_implementation", None) or "unknown",
        "experts_implementation": experts or "n/a",
        # At batch 1 every transformers experts path (eager loop, grouped_mm, batched_mm) only
        # touches the experts the router picked, so a decode step reads the routed experts only.
        "experts_read_per_token": "routed" if is_moe(config) else "n/a",
    }


def is_moe(config) -> bool:
    return bool(getattr(config, "num_experts_per_tok", None)) and bool(
        getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    )
