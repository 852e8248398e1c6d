"""Timed generate calls: one-token (TTFT) and full-length runs with per-step timestamps.

Every timed region starts and ends with a device synchronisation and uses a monotonic clock.
Per-step times come from a streamer: generate hands it each new token after copying it to the
host, which is the moment that token exists for a user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from deploybench.enums import CacheImplementation
from deploybench.instruments.device import is_cuda
from deploybench.plan.spec import DecodingMode


class GenerationCountError(RuntimeError):
    """A generate call returned a number of new tokens other than requested."""


def synchronize(device: str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize()


class StepClock:
    """A generate streamer that records when each new token reaches the host."""

    def __init__(self):
        self.token_times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # the first put is the prompt itself
            self._prompt_seen = True
            return
        self.token_times.append(time.perf_counter())

    def end(self) -> None:
        pass


@dataclass
class RunTiming:
    e2e_s: float
    token_times: list[float] = field(default_factory=list)  # absolute perf_counter() stamps
    new_tokens: int = 0

    @property
    def itl_s(self) -> list[float]:
        t = self.token_times
        return [b - a for a, b in zip(t, t[1:])]

    @property
    def decode_tps(self) -> float | None:
        """(gen - 1) / (t_last - t_first): decode speed after the first token."""
        t = self.token_times
        if len(t) < 2 or t[-1] <= t[0]:
            return None
        return (len(t) - 1) / (t[-1] - t[0])


def generation_config(
    decoding: DecodingMode,
    new_tokens: int,
    pad_token_id: int,
    cache_implementation: CacheImplementation | None = None,
):
    """A generation config that produces exactly `new_tokens` tokens.

    No EOS token stops it: an EOS is generated like any other token and kept, so the output is
    what the model chose rather than a masked second choice. Sampling parameters not given are
    switched off explicitly rather than left to library defaults.
    """
    from transformers import GenerationConfig

    kwargs = dict(
        max_new_tokens=new_tokens,
        do_sample=decoding.do_sample,
        eos_token_id=[],  # empty, not None: None falls back to the model's own EOS
        pad_token_id=pad_token_id,
        return_dict_in_generate=True,
    )
    if decoding.do_sample:
        temperature, top_k, top_p = decoding.filters
        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
    if cache_implementation:
        kwargs["cache_implementation"] = CacheImplementation(cache_implementation).value
    return GenerationConfig(**kwargs)


# The settings a row records as what generate() applied (generation_settings_json).
RECORDED_SETTINGS = (
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "max_new_tokens",
    "min_new_tokens",
)


def isolate_generation_config(model) -> None:
    """Let only the cell's settings apply: generate() fills every setting a config leaves unset from
    model.generation_config, which from_pretrained reads from the checkpoint's generation_config.json
    (a repetition penalty or min_p there would apply silently). Replace it with transformers' plain
    defaults, keeping the special token ids."""
    from transformers import GenerationConfig

    loaded = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=loaded.bos_token_id, eos_token_id=loaded.eos_token_id, pad_token_id=loaded.pad_token_id
    )


def effective_settings(model, gen_config) -> dict:
    """The RECORDED_SETTINGS generate() will use for `gen_config` on `model`, after its merging."""
    prepared, _ = model._prepare_generation_config(gen_config)
    return {key: getattr(prepared, key, None) for key in RECORDED_SETTINGS}


def timed_generate(model, input_ids, attention_mask, gen_config, device: str, seed: int, clock: bool):
    """One synchronised, timed generate. Returns (RunTiming, output)."""
    torch.manual_seed(seed)
    streamer = StepClock() if clock else None
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=gen_config,
            streamer=streamer,
        )
    synchronize(device)
    elapsed = time.perf_counter() - start
    new_tokens = output.sequences.shape[1] - input_ids.shape[1]
    if new_tokens != gen_config.max_new_tokens:
        raise GenerationCountError(f"generate returned {new_tokens} new tokens, expected {gen_config.max_new_tokens}")
    times = streamer.token_times if streamer else []
    if streamer and len(times) != new_tokens:
        raise GenerationCountError(f"streamer saw {len(times)} tokens, generate returned {new_tokens}")
    return RunTiming(e2e_s=elapsed, token_times=times, new_tokens=new_tokens), output
