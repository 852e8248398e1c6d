"""What the GPU benchmarks share: a random-weight model with a prompt of exact length, and run orders."""

from __future__ import annotations

import time

import torch

from deploybench import models, prompts
from deploybench.environment import resolve_device
from deploybench.timing import synchronize


def random_model_and_prompt(
    architecture: str, context: int, dtype: str = "bfloat16", experts_implementation: str | None = None
):
    """(LoadedModel, input ids of `context` tokens, device) for an architecture card, as the harness builds them."""
    device = resolve_device("auto")
    spec = {"source": "random", "architecture": architecture, "attn_implementation": "eager"}
    if experts_implementation:
        spec["experts_implementation"] = experts_implementation
    loaded = models.load_model(spec, dtype, device)
    prompt = prompts.random_prompt(loaded.model.config.vocab_size, context, seed=0)
    return loaded, torch.tensor([prompt.input_ids], device=device), device


def rotated(items: tuple, round_index: int) -> tuple:
    """items started at position round_index: over rounds every item runs at every place, spreading drift."""
    k = round_index % len(items)
    return items[k:] + items[:k]


def graphed(fn, device: str):
    """On GPU, fn captured as one CUDA graph, so kernel launches from Python do not set the pace."""
    if not device.startswith("cuda"):
        return fn
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # warm-up outside capture: cuBLAS picks its kernels and workspace here
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def timed(fn, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start
