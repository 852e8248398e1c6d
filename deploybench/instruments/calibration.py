"""What this GPU can do, measured in the cell's own process: the ceilings its figures are judged by.

- Copy bandwidth: a 1 GiB device-to-device copy (bytes read + written), as the classic roofline uses.
- GEMV bandwidth: the model's dominant weight shape multiplied by one vector, over enough distinct
  copies that the L2 cache cannot serve a repeat, for at least a second. Batch-1 decode is a chain of
  such products, so this is the bandwidth decode can reach (below what a plain copy sustains).
- GEMM rate: a large square bf16/fp16 matrix product, the compute ceiling.
- Launch cost: host time to launch one trivial CUDA op from Python, which bounds eager decode.

Every function returns None on a CPU device (there is no ceiling to calibrate there). Callers free the
calibration buffers with torch.cuda.empty_cache() once a function has returned.
"""

from __future__ import annotations

import time

import torch

from deploybench.instruments.device import is_cuda
from deploybench.results import metrics
from deploybench.stats import median

# The sizes are stated once, in the metric catalogue's definitions of the columns they calibrate.
L2_MULTIPLE_BYTES = int(metrics.get("gemv_bandwidth_bytes_per_s").parameter("weight_copies_gib") * 2**30)
GEMM_SIZE = int(metrics.get("gemm_flops_per_s").parameter("gemm_size"))


def dominant_weight_shape(model: torch.nn.Module) -> tuple[int, int] | None:
    """(out, in) of the matrix shape holding the most bytes of the model: what decode streams most.

    Stacked expert weights (experts, a, b) count as experts x one (a, b) matrix each. Works on a meta model.
    """
    totals: dict[tuple[int, int], int] = {}
    for name, param in model.named_parameters():
        if param.dim() == 2 and "embed" not in name:
            shape = tuple(param.shape)
            totals[shape] = totals.get(shape, 0) + param.numel()
        elif param.dim() == 3:
            shape = tuple(param.shape[1:])
            totals[shape] = totals.get(shape, 0) + param.numel()
    return max(totals, key=totals.get) if totals else None


def copy_bandwidth(device: str, size_bytes: int = 1 << 30, repeats: int = 10) -> float | None:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written.

    Median of `repeats` timed copies after one warm-up, timed with CUDA events. None on CPU.
    """
    if not is_cuda(device):
        return None
    src = torch.empty(size_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = (
            torch.cuda.Event(enable_timing=True),
            torch.cuda.Event(enable_timing=True),
        )
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del src, dst
    torch.cuda.empty_cache()
    times.sort()
    return 2 * size_bytes / times[len(times) // 2]


def _graph_of(fn) -> torch.cuda.CUDAGraph:
    """Record fn once into a CUDA graph, after a warm-up on a side stream (as torch.cuda.graphs advises)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def _replay_for(graph: torch.cuda.CUDAGraph, min_s: float) -> tuple[float, int]:
    """(seconds, replays): replay until at least min_s of GPU time has been timed with CUDA events."""
    graph.replay()
    torch.cuda.synchronize()
    replays, elapsed = 1, 0.0
    while True:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        elapsed = start.elapsed_time(end) / 1000
        if elapsed >= min_s:
            return elapsed, replays
        replays = max(replays * 2, int(replays * min_s / max(elapsed, 1e-6) * 1.1))


def gemv_bandwidth(shape: tuple[int, int] | None, dtype: torch.dtype, device: str, min_s: float = 1.0) -> float | None:
    """Bytes/s a GEMV of weight `shape` (out, in) sustains: weights + vector read, result written."""
    if not is_cuda(device) or shape is None:
        return None
    out_features, in_features = shape
    matrix_bytes = out_features * in_features * dtype.itemsize
    copies = max(1, -(-L2_MULTIPLE_BYTES // matrix_bytes))
    weights = [torch.randn(out_features, in_features, device=device, dtype=dtype) for _ in range(copies)]
    x = torch.randn(1, in_features, device=device, dtype=dtype)
    ys = [torch.empty(1, out_features, device=device, dtype=dtype) for _ in range(copies)]

    def chain():
        for w, y in zip(weights, ys):
            torch.matmul(x, w.t(), out=y)

    seconds, replays = _replay_for(_graph_of(chain), min_s)
    moved = copies * (matrix_bytes + (in_features + out_features) * dtype.itemsize)
    return moved * replays / seconds


def gemm_flops(dtype: torch.dtype, device: str, min_s: float = 0.3) -> float | None:
    """FLOP/s of a GEMM_SIZE^3 matrix product in `dtype` (2 n^3 FLOPs each)."""
    if not is_cuda(device):
        return None
    a = torch.randn(GEMM_SIZE, GEMM_SIZE, device=device, dtype=dtype)
    b = torch.randn(GEMM_SIZE, GEMM_SIZE, device=device, dtype=dtype)
    c = torch.empty(GEMM_SIZE, GEMM_SIZE, device=device, dtype=dtype)
    seconds, replays = _replay_for(_graph_of(lambda: torch.matmul(a, b, out=c)), min_s)
    return 2 * GEMM_SIZE**3 * replays / seconds


def launch_us(device: str, batches: int = 20, per_batch: int = 100) -> float | None:
    """Median host microseconds to launch one trivial CUDA op from Python (queue drained between batches)."""
    if not is_cuda(device):
        return None
    x = torch.zeros(1, device=device)
    for _ in range(per_batch):  # warm-up: the op's first launch loads its kernel
        x.add_(1)
    per_launch = []
    for _ in range(batches):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(per_batch):
            x.add_(1)
        per_launch.append((time.perf_counter() - start) / per_batch * 1e6)
    torch.cuda.synchronize()
    return median(per_launch)
