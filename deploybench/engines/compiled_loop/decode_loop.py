"""The compiled_loop backend: static KV cache, a torch.compile'd decode step, no host sync per token.

generate() synchronises with the host at every token (stopping criteria, streamer), so the GPU
idles while Python prepares the next step. An optimised stack keeps the GPU fed: this loop runs
the prefill eagerly, then replays one compiled decode step (forward + device-side sampling, CUDA
graphs on GPU) per token, feeding each token back on the device.

Timing: the first token is synchronised to the host (TTFT). Later tokens are stamped on the
device with CUDA events and placed on the host clock relative to the first one, so inter-token
latency is the time between tokens being produced on the GPU. On CPU every op is synchronous and
each token is stamped with the host clock.

Attention: decode steps run attention.gqa_eager_attention (the eager math without repeat_kv's copies)
unless the model entry's options choose another kernel; the prefill runs transformers' SDPA where the
model supports it (attention.GQA_SDPA_PREFILL).

Options (loop_options.CompiledLoopOptions, from the model entry): fused projections (fusion.py), the
decode-attention kernel (attention.py) and the experts path of the decode steps (decode_experts.py).
The loop keeps what it built (`build`), and the row says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from deploybench.engines import models
from deploybench.engines.base import DecodeBuild
from deploybench.engines.compiled_loop import attention, decode_experts, fusion
from deploybench.engines.compiled_loop.sampling import make_sampler
from deploybench.engines.timing import RunTiming, synchronize
from deploybench.instruments.device import is_cuda
from deploybench.plan.loop_options import DEFAULT, CompiledLoopOptions
from deploybench.plan.spec import DecodingMode


@dataclass
class LoopOutput:
    sequences: torch.Tensor
    past_key_values: object


class CompiledDecodeLoop:
    """One model, one cell shape: a static cache for batch x (context + gen - 1) tokens and a compiled step.

    `options` are built into the model itself (fused weights, its experts modules' forward): a model
    takes one variant, so build a fresh one to try another.
    """

    def __init__(
        self,
        model,
        decoding: DecodingMode,
        context: int,
        gen: int,
        device: str,
        options: CompiledLoopOptions = DEFAULT,
        batch: int = 1,
    ):
        from transformers import StaticCache

        _refuse_uncapturable_experts(model, options, device)
        fused = fusion.fuse(model, options.fusions)  # before the cache and the compile: they see the fused layers
        # K and V read in place rather than copied once per query head; prefill through SDPA (attention.py).
        model.set_attn_implementation(attention.register(model, options.decode_attention))
        # A decode step feeds the experts one token per sequence: batch tokens take the decode path.
        decode_experts.install(model, options.decode_experts, decode_tokens=batch)
        self.batch = batch  # the static cache and the compiled graph hold this batch
        self.build = _decode_build(model, options, fused)
        self.model = model
        self.device = device
        # The last generated token is never fed back: the cache holds context + gen - 1 tokens.
        self.cache = StaticCache(config=model.config, max_cache_len=context + gen - 1)
        _steady_sliding_layers(self.cache, context + gen - 1, getattr(model.config, "sliding_window", None))
        self.sampler = make_sampler(decoding)
        mode = "reduce-overhead" if is_cuda(device) else None  # CUDA graphs on GPU only
        one_graph = not attention.breaks_graph(options.decode_attention, device)  # FlexAttention on CPU breaks it
        self.step = torch.compile(self._decode_step, mode=mode, fullgraph=one_graph)

    def _next_token(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        logits = self.model(
            input_ids=input_ids,
            position_ids=position_ids,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        return self.sampler(logits)

    def _decode_step(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        return self._next_token(token[:, None], position)

    def run(self, input_ids: torch.Tensor, new_tokens: int, seed: int, clock: bool):
        """One synchronised generation of exactly `new_tokens` tokens for each of the (batch, context) rows
        (equal lengths: no padding mask is carried). Returns (RunTiming, LoopOutput)."""
        if input_ids.shape[0] != self.batch:
            raise ValueError(
                f"this loop runs batch {self.batch}; build another CompiledDecodeLoop for batch {input_ids.shape[0]}"
            )
        on_gpu = is_cuda(self.device)
        torch.manual_seed(seed)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        synchronize(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            self.cache.reset()  # in place: the compiled step holds the cache's addresses
            token = self._next_token(input_ids, positions)  # prefill, eager
            synchronize(self.device)
            first = time.perf_counter()
            tokens, stamps = [token], []
            position = positions[:, -1:] + 1
            origin = _event() if on_gpu else None
            for _ in range(1, new_tokens):
                if on_gpu:
                    torch.compiler.cudagraph_mark_step_begin()
                # clone: the graph reuses its output buffer on the next replay
                token = self.step(token, position).clone()
                position = position + 1
                tokens.append(token)
                if clock:
                    stamps.append(_event() if on_gpu else time.perf_counter())
            synchronize(self.device)
            elapsed = time.perf_counter() - start
        token_times = []
        if clock:
            later = [first + origin.elapsed_time(e) / 1000 for e in stamps] if on_gpu else stamps
            token_times = [first, *later]
        sequences = torch.cat([input_ids, torch.stack(tokens, dim=1)], dim=1)
        timing = RunTiming(e2e_s=elapsed, token_times=token_times, new_tokens=len(tokens))
        return timing, LoopOutput(sequences, self.cache)


def _refuse_uncapturable_experts(model, options: CompiledLoopOptions, device: str) -> None:
    """transformers' grouped_mm compiles only in bf16: in another dtype it falls back to a loop over
    `offs.tolist()`, a host copy that CUDA graph capture cannot hold. Refused as an unsupported dtype (a row)
    before anything is built, naming the option that avoids it."""
    if not is_cuda(device) or not models.is_moe(model.config) or model.dtype == torch.bfloat16:
        return
    path = options.decode_experts or getattr(model.config, "_experts_implementation", None)
    if str(path) == "grouped_mm":
        raise NotImplementedError(
            f"Unsupported dtype {model.dtype} for grouped_mm experts under CUDA graphs (compiled_loop): transformers "
            "falls back to a host loop outside bfloat16; set the model's compiled_loop.decode_experts to "
            "gathered_reduction or batched_mm"
        )


def _decode_build(model, options: CompiledLoopOptions, fused: fusion.FusionResult) -> DecodeBuild:
    """The row's account of what this loop built."""
    moe = models.is_moe(model.config)
    experts = options.decode_experts or getattr(model.config, "_experts_implementation", None)
    return DecodeBuild(
        fusions=tuple(fused.applied),
        fusions_skipped=tuple(fused.skipped),
        decode_attention_kernel=options.decode_attention.value,
        decode_experts_implementation=str(experts) if moe else None,
    )


def _steady_sliding_layers(cache, max_cache_len: int, window: int | None) -> None:
    """Swap the cache's sliding-window layers for ones torch.compile sees the same at every step.

    transformers counts the tokens a sliding layer has seen in a Python int that the masks read, so
    torch.compile recompiles the decode step with that int dynamic and CUDA graphs record a new graph
    at every position. Once the window is full, the layer's mask depends only on positions relative
    to the window (q_offset - kv_offset = window - 1 at every step): holding the count at the window
    gives the same masks and tensors, and one graph for all steps.
    """
    from transformers.cache_utils import StaticSlidingWindowLayer

    class SteadySlidingWindowLayer(StaticSlidingWindowLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            keys_values = super().update(key_states, value_states, *args, **kwargs)
            self.cumulative_length_int = min(self.cumulative_length_int, self.max_cache_len)
            return keys_values

    for i, layer in enumerate(cache.layers):
        if type(layer) is StaticSlidingWindowLayer:
            cache.layers[i] = SteadySlidingWindowLayer(max_cache_len=max_cache_len, sliding_window=window)


def _event() -> torch.cuda.Event:
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event
