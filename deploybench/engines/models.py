"""Model loading: a pretrained checkpoint, or an architecture card built with random weights.

Latency, memory and energy at batch 1 depend on shapes, not weight values, so a random-weight
model of the full-size architecture answers deployment questions without downloading weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from deploybench.engines import experts
from deploybench.engines.base import Implementations
from deploybench.enums import DType, ExpertsImplementation, WeightsSource
from deploybench.plan.spec import ModelEntry

TORCH_DTYPES = {
    DType.BFLOAT16: torch.bfloat16,
    DType.FLOAT16: torch.float16,
    DType.FLOAT32: torch.float32,
}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object | None  # None for random-weight models: prompts are seeded token ids
    weights_source: WeightsSource
    model_ref: str


def load_card(path: str | Path):
    """Read an architecture card (HF config JSON) into a transformers config."""
    from transformers import AutoConfig

    card = json.loads(Path(path).read_text())
    model_type = card.pop("model_type")
    return AutoConfig.for_model(model_type, **card)


def model_config(model: ModelEntry):
    """The transformers config of a model entry, without loading weights."""
    if model.source is WeightsSource.RANDOM:
        config = load_card(model.architecture)
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model.id, **_checkpoint_kwargs(model))
    if model.max_position_embeddings:
        config.max_position_embeddings = model.max_position_embeddings
    return config


def _checkpoint_kwargs(model: ModelEntry) -> dict:
    return {"revision": model.revision, "trust_remote_code": model.trust_remote_code}


def _impl_kwargs(model: ModelEntry) -> dict:
    """Only what the entry sets: otherwise transformers chooses (sdpa for Qwen3 and Llama, eager for gpt-oss)."""
    kwargs = {}
    if model.attn_implementation:
        kwargs["attn_implementation"] = model.attn_implementation
    if model.experts_implementation:
        if model.experts_implementation is ExpertsImplementation.ALL_EXPERTS:
            experts.register()
        kwargs["experts_implementation"] = model.experts_implementation.value  # plain text for transformers
    return kwargs


def load_model(model: ModelEntry, dtype: DType, device: str, seed: int | None = None) -> LoadedModel:
    """Build or load the model on `device` in `dtype`, in eval mode. `seed` seeds random weights, so a
    rerun builds the same model (the routing of a random MoE, and so its expert coverage, follows them)."""
    from transformers import AutoModelForCausalLM

    torch_dtype = TORCH_DTYPES[dtype]
    if model.source is WeightsSource.RANDOM:
        if seed is not None:
            torch.manual_seed(seed)
        # Build straight on the target device and dtype: no full-size fp32 copy on the host.
        with torch.device(device):
            built = AutoModelForCausalLM.from_config(model_config(model), dtype=torch_dtype, **_impl_kwargs(model))
        tokenizer = None
    else:
        from transformers import AutoTokenizer

        extra = {}
        if model.max_position_embeddings:
            extra["max_position_embeddings"] = model.max_position_embeddings
        built = AutoModelForCausalLM.from_pretrained(
            model.id,
            dtype=torch_dtype,
            device_map=device,
            **_checkpoint_kwargs(model),
            **_impl_kwargs(model),
            **extra,
        )
        tokenizer = AutoTokenizer.from_pretrained(model.id, **_checkpoint_kwargs(model))
    built.eval()
    return LoadedModel(built, tokenizer, model.source, model.ref)


def implementations(model) -> Implementations:
    """Attention and experts implementations actually in use (recorded in every row)."""
    config = model.config
    moe = is_moe(config)
    implementation = getattr(config, "_experts_implementation", None) if moe else None
    return Implementations(
        attn_implementation=getattr(config, "_attn_implementation", None) or "unknown",
        experts_implementation=implementation or "n/a",
        experts_read_per_token=experts.experts_read_per_token(moe, implementation),
    )


def is_moe(config) -> bool:
    return bool(getattr(config, "num_experts_per_tok", None)) and bool(
        getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    )
