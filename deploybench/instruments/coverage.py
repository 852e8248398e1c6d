"""Expert coverage at batch B: how many distinct experts a decode step of B tokens reads per MoE layer.

At batch 1 a step reads top_k experts per layer; at batch B the router sends the B tokens to
different experts and the step reads their union. `experts_touched_per_layer` is the mean over
decode steps and MoE layers of the number of distinct experts the router chose for the step's B
tokens; `uniform_coverage` is what independent uniform routing would give.

The choices are read from the router modules by forward hooks (transformers' MoE routers return
(logits, scores, indices): GptOssTopKRouter, MixtralTopKRouter, ...). Each hook appends the
indices tensor as it is, on the device, so recording costs no host sync per step; the count is
reduced once, after the run. Hooks do not run inside a compiled graph: record an eager generate,
outside every timed region (`record_generate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class CoverageError(RuntimeError):
    """The model's routers cannot be read, or a recording does not have the shape of a generate."""


def uniform_coverage(n_experts: int, top_k: int, batch: int) -> float:
    """E x (1 - (1 - k/E)^B): expected distinct experts per layer when each of B tokens picks k of E
    experts independently and uniformly (a given expert is missed by one token with probability 1 - k/E)."""
    return n_experts * (1 - (1 - top_k / n_experts) ** batch)


def router_modules(model) -> list[tuple[str, torch.nn.Module]]:
    """The MoE router of every layer, in layer order: modules named *TopKRouter (any case) with top_k
    and num_experts, whose forward returns (logits, scores, indices)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if type(module).__name__.lower().endswith("topkrouter")
        and isinstance(getattr(module, "top_k", None), int)
        and isinstance(getattr(module, "num_experts", None), int)
    ]


@dataclass(frozen=True)
class Coverage:
    """Distinct experts per MoE layer per decode step, reduced over a recorded generate."""

    experts_touched_per_layer: float  # mean over decode steps and layers
    per_layer: tuple[float, ...]  # mean over decode steps, one per MoE layer
    per_step: tuple[float, ...]  # mean over layers, one per decode step
    n_experts: int
    top_k: int
    batch: int
    decode_steps: int

    @property
    def uniform_prediction(self) -> float:
        return uniform_coverage(self.n_experts, self.top_k, self.batch)


def distinct_experts(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """indices (..., tokens, k) of chosen experts -> (...) distinct experts among those tokens, on the device."""
    flat = indices.reshape(*indices.shape[:-2], -1).long()
    hit = torch.zeros(*flat.shape[:-1], n_experts, dtype=torch.bool, device=flat.device)
    hit.scatter_(-1, flat, True)
    return hit.sum(-1)


class RouterRecorder:
    """Forward hooks that keep every router call's expert indices, per layer, on the device.

    Use around one generate: `with RouterRecorder(model) as recorder: model.generate(...)`, then
    `recorder.coverage(batch)`. A layer's first call is the prefill (all prompt tokens at once) and
    is dropped; each later call is one decode step of `batch` tokens.
    """

    def __init__(self, model):
        self.routers = router_modules(model)
        if not self.routers:
            raise CoverageError(f"{type(model).__name__}: no *TopKRouter modules, so expert choices cannot be read")
        self.n_experts = {m.num_experts for _, m in self.routers}
        self.top_k = {m.top_k for _, m in self.routers}
        if len(self.n_experts) != 1 or len(self.top_k) != 1:
            raise CoverageError(f"routers differ in experts or top_k: {self.n_experts}, {self.top_k}")
        self.calls: list[list[torch.Tensor]] = [[] for _ in self.routers]  # per layer, per call after the first
        self.prefill_seen = [False] * len(self.routers)
        self._handles = []

    def _hook(self, layer: int):
        def record(module, args, output):
            if not (isinstance(output, tuple) and len(output) == 3 and not output[2].is_floating_point()):
                raise CoverageError(
                    f"{type(module).__name__} returned {type(output).__name__}, not (logits, scores, indices)"
                )
            if self.prefill_seen[layer]:
                self.calls[layer].append(output[2].detach())  # a device tensor: no sync
            self.prefill_seen[layer] = True

        return record

    def __enter__(self) -> RouterRecorder:
        self._handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(self.routers)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def coverage(self, batch: int) -> Coverage:
        """Reduce the recording (one host sync). Every layer must have the same number of decode
        steps, each of exactly `batch` tokens."""
        steps = {len(c) for c in self.calls}
        if len(steps) != 1 or not steps.pop():
            raise CoverageError(f"decode steps recorded per layer: {[len(c) for c in self.calls]}")
        shapes = {tuple(t.shape) for c in self.calls for t in c}
        (k,) = self.top_k
        if shapes != {(batch, k)}:
            raise CoverageError(f"router calls had shapes {sorted(shapes)}; a step of {batch} tokens is {(batch, k)}")
        (n_experts,) = self.n_experts
        stacked = torch.stack([torch.stack(c) for c in self.calls])  # (layers, steps, batch, k)
        counts = distinct_experts(stacked, n_experts).double().cpu()  # (layers, steps)
        return Coverage(
            experts_touched_per_layer=float(counts.mean()),
            per_layer=tuple(counts.mean(1).tolist()),
            per_step=tuple(counts.mean(0).tolist()),
            n_experts=n_experts,
            top_k=k,
            batch=batch,
            decode_steps=counts.shape[1],
        )


def record_generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, gen_config) -> Coverage:
    """One eager generate of the (B, context) batch with the routers recorded; its expert coverage.

    Not timed: run it outside every timed and energy window (the hooks and the kept indices cost a little)."""
    with torch.inference_mode(), RouterRecorder(model) as recorder:
        model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gen_config)
    return recorder.coverage(input_ids.shape[0])
