"""How much of a cell's torch.compile came from the machine's Inductor cache.

Inductor keeps compiled graphs on disk (TORCHINDUCTOR_CACHE_DIR, /tmp/torchinductor_$USER by default), keyed by
the graph, the GPU's name and the torch, Triton and CUDA versions, so a process that compiles a graph an earlier
process on the machine compiled loads it instead: on an H100 a compiled_loop variant's step compiled in 40-85 s
cold and 7-12 s when a cell before it had compiled the same graph. compile_s is therefore a cold start's only
where nothing came from the cache: these counts (torch's own FX-graph cache counters) say which it was.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompileCache:
    hits: int  # graphs loaded from the cache
    misses: int  # graphs compiled (and then saved to the cache)


def snapshot() -> CompileCache:
    """The process's counts so far (torch._dynamo.utils.counters, which only grow)."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return CompileCache(int(inductor["fxgraph_cache_hit"]), int(inductor["fxgraph_cache_miss"]))


def since(before: CompileCache) -> CompileCache:
    now = snapshot()
    return CompileCache(now.hits - before.hits, now.misses - before.misses)
