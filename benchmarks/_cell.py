"""What the GPU benchmarks share: the harness's cell for a card, its random-weight model and prompt, run orders."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from deploybench.engines import models, prompts
from deploybench.engines.timing import synchronize
from deploybench.enums import Backend, Device, DType, ExpertsImplementation, WeightsSource, values
from deploybench.instruments.device import is_cuda
from deploybench.instruments.environment import resolve_device
from deploybench.plan.spec import STANDARD_DECODING, CellSpec, parse_cell


def shape_arguments(parser: argparse.ArgumentParser, experts: str | None = "", dtype: bool = True) -> None:
    """The arguments every GPU benchmark takes for its cell: the card, context, gen, dtype and (unless
    experts is None) the experts implementation, with `experts` as its help text."""
    parser.add_argument("--architecture", required=True, help="an architecture card (workflow/architectures/*.json)")
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--gen", type=int, default=64, help="the cell's generation length (sets the cache size)")
    if dtype:
        parser.add_argument("--dtype", default=DType.BFLOAT16, choices=values(DType))
    if experts is not None:
        parser.add_argument("--experts-implementation", choices=values(ExpertsImplementation), help=experts or None)


def benchmark_cell(
    architecture: str,
    context: int,
    gen: int,
    dtype: DType = DType.BFLOAT16,
    backend: Backend = Backend.EAGER,
    experts_implementation: str | None = None,
    compiled_loop: dict | None = None,
) -> CellSpec:
    """A card's cell as the harness measures it: random weights, eager attention, greedy, seed 0;
    `compiled_loop`: the model entry's compiled_loop options (fusions, decode kernels)."""
    model = {"source": WeightsSource.RANDOM, "architecture": architecture, "attn_implementation": "eager"}
    if experts_implementation:
        model["experts_implementation"] = experts_implementation
    if compiled_loop:
        model["compiled_loop"] = compiled_loop
    return parse_cell(
        {
            "model_name": Path(architecture).stem,
            "model": model,
            "decoding_name": "greedy",
            "decoding": STANDARD_DECODING["greedy"],
            "measurement": {"seed": 0},
            "context": context,
            "gen": gen,
            "dtype": dtype,
            "backend": backend,
        }
    )


def random_model_and_prompt(cell: CellSpec, seed: int | None = None):
    """(LoadedModel, input ids of `cell.context` tokens, device) for the cell, as the harness builds them;
    `seed` seeds the random weights (models.load_model)."""
    device = resolve_device(Device.AUTO)
    loaded = models.load_model(cell.model, cell.dtype, device, seed=seed)
    prompt = prompts.random_prompt(loaded.model.config.vocab_size, cell.context, seed=0)
    return loaded, torch.tensor([prompt.input_ids], device=device), device


def rotated(items: tuple, round_index: int) -> tuple:
    """items started at position round_index: over rounds every item runs at every place, spreading drift."""
    k = round_index % len(items)
    return items[k:] + items[:k]


def graphed(fn, device: str):
    """On GPU, fn captured as one CUDA graph, so kernel launches from Python do not set the pace."""
    if not is_cuda(device):
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
