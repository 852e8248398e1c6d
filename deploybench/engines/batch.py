"""Generation at batch B: B distinct prompts of exactly `context` tokens, one generate, `gen` new tokens in every row.

Every row has the same length, so the batch needs no padding; the attention mask (all ones) is
passed anyway, as at batch 1. A decode step produces one token per row: per-sequence decode speed
is RunTiming.decode_tps (steps per second), the aggregate over the batch B times it (cell_figures.latency_figures).
"""

from __future__ import annotations

import torch

from deploybench.engines import prompts
from deploybench.engines.timing import GenerationCountError, timed_generate


def prompt_batch(loaded, config, context: int, batch: int, seed: int) -> prompts.PromptBatch:
    """The cell's B prompts: through the tokenizer's chat template when it has one (pretrained), else
    seeded random ids without the special ids (random weights). Row 0 is the batch-1 cell's prompt."""
    if loaded.tokenizer is not None:
        return prompts.build_prompts(loaded.tokenizer, context, batch, seed=seed)
    return prompts.random_prompts(
        config.vocab_size, context, batch, seed=seed, exclude_ids=prompts.special_token_ids(config)
    )


def batch_tensors(batch: prompts.PromptBatch, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (B, context), on `device`."""
    input_ids = torch.tensor(batch.input_ids, device=device)
    return input_ids, attention_mask(input_ids)


def attention_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """All ones: every row of a batch is exactly `context` tokens, so nothing is padding."""
    return torch.ones_like(input_ids)


def effective_eos_ids(model, gen_config) -> list[int]:
    """The EOS ids generate() will stop a row on for `gen_config`, after it merged in the model's own
    generation config (the cell's config sets none: timing.generation_config)."""
    prepared, _ = model._prepare_generation_config(gen_config)
    if prepared.stop_strings:
        raise GenerationCountError(f"stop strings {prepared.stop_strings!r} could end rows early")
    eos = prepared.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def new_tokens_per_row(sequences: torch.Tensor, context: int, eos_ids: list[int]) -> list[int]:
    """New tokens each row really generated: up to and including its first EOS (generate pads a
    finished row from there on), else every position after the prompt."""
    tail = sequences[:, context:]
    if not eos_ids:
        return [tail.shape[1]] * tail.shape[0]
    is_eos = torch.isin(tail, torch.tensor(eos_ids, device=tail.device))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, tail.shape[1])
    return first.tolist()


def timed_generate_batch(
    model, input_ids, attention_mask, gen_config, device: str, seed: int, clock: bool, eos_ids: list[int] | None = None
):
    """timing.timed_generate on a (B, context) batch, then checks that EVERY row got exactly
    max_new_tokens new tokens (GenerationCountError naming the rows otherwise). Returns (RunTiming, output).

    `eos_ids`: effective_eos_ids of the cell, resolved once by a caller that runs many times (runs sit inside
    the energy windows); None resolves them here."""
    timing, output = timed_generate(model, input_ids, attention_mask, gen_config, device, seed, clock)
    if eos_ids is None:
        eos_ids = effective_eos_ids(model, gen_config)
    per_row = new_tokens_per_row(output.sequences, input_ids.shape[1], eos_ids)
    short = {row: n for row, n in enumerate(per_row) if n != gen_config.max_new_tokens}
    if short:
        raise GenerationCountError(
            f"rows {sorted(short)} got {sorted(set(short.values()))} new tokens, expected {gen_config.max_new_tokens}"
        )
    return timing, output
