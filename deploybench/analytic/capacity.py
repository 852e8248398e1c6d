"""The largest batch that fits in device memory, estimated before anything expensive is loaded.

Memory at batch B = weights + B x (KV of one sequence + activations of one sequence). The KV of a
sequence is analytic (deploybench.analytic.kvcache); the activations are measured where a run is at hand
(`measured_estimate`: a run's peak allocated bytes minus the weights and the KV it held, per sequence), else
estimated from the architecture (`prefill_activations`). Activations peak in the prefill (eager attention
holds B x heads x context^2 scores, which at large B and long contexts outgrow the KV) and grow with B, so
one measured peak at a smaller batch scales to the others.

A requested batch above the estimate is refused before the model loads: `check_batch_fits` raises
PredictedOutOfMemoryError, which deploybench.measure.failures.classify reads as failure_kind oom, so the
caller writes an out-of-memory row rather than crashing (as for a real torch.OutOfMemoryError).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deploybench.analytic.kvcache import head_dim
from deploybench.enums import ExpertsRead
from deploybench.instruments.device import is_cuda

# Fraction of the free memory never planned for: the caching allocator's fragmentation and rounding,
# CUDA graph pools, cuBLAS workspaces and the transient buffers of ops the peak did not see.
DEFAULT_HEADROOM = 0.10


# Bytes of one float32 element: softmax in float32, the logits' float32 copy.
FP32_BYTES = 4
# Intermediate-width tensors a token's MLP (each expert it runs) holds at once: gate, up and their product.
MLP_INTERMEDIATES = 3


class PredictedOutOfMemoryError(RuntimeError):
    """A batch that the memory estimate says will not fit; refused before running. Its message says
    'out of memory' so failures.classify gives failure_kind oom."""


def activation_bytes_per_seq(peak_bytes: int, weights_bytes: int, kv_bytes_per_seq: int, batch: int = 1) -> float:
    """(peak - weights - batch x KV per sequence) / batch, from a run at `batch` (at least 0).

    batch 1: the batch-1 peak minus weights minus KV. batch B0 > 1: a peak measured at a smaller batch,
    scaled per sequence (activations grow linearly with the batch)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return max(0.0, (peak_bytes - weights_bytes - batch * kv_bytes_per_seq) / batch)


def bytes_at_batch(weights_bytes: int, kv_bytes_per_seq: int, activation_per_seq: float, batch: int) -> float:
    """Peak allocated bytes predicted at `batch`: weights + batch x (KV + activations) per sequence."""
    return weights_bytes + batch * (kv_bytes_per_seq + activation_per_seq)


def usable_bytes(free_bytes: int, headroom: float = DEFAULT_HEADROOM) -> float:
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom is a fraction of the free memory in [0, 1), got {headroom}")
    return free_bytes * (1 - headroom)


def max_batch_fit(
    free_bytes: int,
    weights_bytes: int,
    kv_bytes_per_seq: int,
    activation_bytes_per_seq: float,
    headroom: float = DEFAULT_HEADROOM,
) -> int:
    """The largest B with weights + B x (KV + activations per sequence) <= free_bytes x (1 - headroom);
    0 when not even the weights and one sequence fit.

    free_bytes: device memory free before the model loads (torch.cuda.mem_get_info()[0] in a fresh process)."""
    per_seq = kv_bytes_per_seq + activation_bytes_per_seq
    if per_seq <= 0:
        raise ValueError("a sequence must cost some bytes (KV + activations > 0)")
    room = usable_bytes(free_bytes, headroom) - weights_bytes
    return max(0, int(room // per_seq))


@dataclass(frozen=True)
class BatchEstimate:
    """What a batch-B cell would need, from figures known before loading: free memory, the weights
    (total_params x dtype bytes, or a smaller batch's row's weights_bytes), the KV and the activations of one
    sequence, and where the activation figure came from."""

    free_bytes: int
    weights_bytes: int
    kv_bytes_per_seq: int
    activation_bytes_per_seq: float
    headroom: float = DEFAULT_HEADROOM
    activation_source: str | None = None

    @property
    def max_batch(self) -> int:
        return max_batch_fit(
            self.free_bytes, self.weights_bytes, self.kv_bytes_per_seq, self.activation_bytes_per_seq, self.headroom
        )

    def needed_bytes(self, batch: int) -> float:
        return bytes_at_batch(self.weights_bytes, self.kv_bytes_per_seq, self.activation_bytes_per_seq, batch)

    def exceeds(self, batch: int) -> bool:
        return batch > self.max_batch


def measured_estimate(
    free_bytes: int,
    peak_bytes: int,
    weights_bytes: int,
    kv_cache_bytes: int,
    batch: int,
    source: str | None = None,
    headroom: float = DEFAULT_HEADROOM,
) -> BatchEstimate:
    """The estimate a run at `batch` measured: its weights, its KV per sequence (kv_cache_bytes / batch) and its
    activations per sequence (activation_bytes_per_seq), against `free_bytes`.

    One function for both uses, so they cannot disagree: a row's max_batch_fit is its max_batch at the free
    memory the run started with, and a cell of the same settings at a larger batch is checked against it
    (deploybench.measure.batch_fit) at the free memory it starts with."""
    kv_per_seq = kv_cache_bytes // batch
    activations = activation_bytes_per_seq(peak_bytes, weights_bytes, kv_per_seq, batch)
    return BatchEstimate(free_bytes, weights_bytes, kv_per_seq, activations, headroom, source)


@dataclass(frozen=True)
class PrefillActivations:
    """Transient bytes of one sequence's prefill at its peak, from the architecture (`prefill_activations`):
    the hidden states, plus the larger of a layer's attention scores and its MLP intermediates (the two are not
    held at once), plus the logits of the last position."""

    hidden_bytes: float
    scores_bytes: float
    mlp_bytes: float
    logits_bytes: float

    @property
    def per_seq(self) -> float:
        return self.hidden_bytes + max(self.scores_bytes, self.mlp_bytes) + self.logits_bytes

    def describe(self) -> str:
        return (
            f"analytic: hidden states {self.hidden_bytes / 1e9:.3f} + max(attention scores "
            f"{self.scores_bytes / 1e9:.3f}, MLP {self.mlp_bytes / 1e9:.3f}) + logits {self.logits_bytes / 1e9:.3f} GB"
        )


def prefill_activations(
    config, split: dict, context: int, dtype: torch.dtype, eager_attention: bool, sinks: bool, reads: ExpertsRead
) -> PrefillActivations:
    """One sequence's prefill transients at `context` tokens in `dtype` (s bytes an element), per layer at its peak:

    - hidden states: context x (2 x hidden + (heads + 2 x kv_heads) x head_dim) x s (residual and normed stream,
      Q, K, V);
    - attention scores, eager attention only (SDPA and flash kernels do not hold them): heads x context^2 x
      3 s with attention sinks (gpt-oss: scores, scores with the sink, softmax in their dtype), else x (s + 8)
      (the scores, their float32 copy and the float32 softmax; 8 in float32);
    - MLP: context x k x MLP_INTERMEDIATES x intermediate x s, k the experts a token runs (top_k routed, every
      expert with all_experts, 1 for a dense MLP);
    - logits: the last position's only (both generate() and compiled_loop keep one), vocab x (s + 4).

    Against the H200 reference rows (batch 1, bf16, 512 and 2048 tokens) this is within about 25% of the measured
    activations for SDPA and eager attention, and about half of all_experts' (its clamped gate holds some eight
    intermediates): a measured figure, where there is one, comes first (deploybench.measure.batch_fit)."""
    s = dtype.itemsize
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    hidden = context * (2 * config.hidden_size + (heads + 2 * kv_heads) * head_dim(config)) * s
    softmax = s + FP32_BYTES * (2 if s < FP32_BYTES else 1)
    scores = heads * context**2 * (3 * s if sinks else softmax) if eager_attention else 0
    if reads is ExpertsRead.NONE:
        width = config.intermediate_size
    else:
        per_expert = getattr(config, "moe_intermediate_size", None) or config.intermediate_size
        width = (split["n_experts"] if reads is ExpertsRead.ALL else split["top_k"]) * per_expert
    mlp = context * MLP_INTERMEDIATES * width * s
    logits = config.vocab_size * (s + FP32_BYTES)
    return PrefillActivations(float(hidden), float(scores), float(mlp), float(logits))


def weights_bytes_estimate(total_params: int, dtype: torch.dtype) -> int:
    """Bytes of the weights once loaded: every parameter in the target dtype (the rows' weights_bytes is the
    measured figure; modules kept in fp32 are a few norms, well under the headroom)."""
    return total_params * dtype.itemsize


def check_batch_fits(batch: int, estimate: BatchEstimate) -> None:
    """Raise PredictedOutOfMemoryError when `batch` exceeds the estimate: call it before loading the model."""
    if estimate.exceeds(batch):
        raise PredictedOutOfMemoryError(
            f"predicted out of memory, not attempted: batch {batch} needs {estimate.needed_bytes(batch) / 1e9:.2f} GB "
            f"(weights {estimate.weights_bytes / 1e9:.2f} GB + {batch} x "
            f"{(estimate.kv_bytes_per_seq + estimate.activation_bytes_per_seq) / 1e9:.3f} GB per sequence: KV "
            f"{estimate.kv_bytes_per_seq / 1e9:.3f} + activations {estimate.activation_bytes_per_seq / 1e9:.3f} GB, "
            f"{estimate.activation_source or 'activations given'}), "
            f"usable {usable_bytes(estimate.free_bytes, estimate.headroom) / 1e9:.2f} GB of "
            f"{estimate.free_bytes / 1e9:.2f} GB free ({estimate.headroom:.0%} headroom); "
            f"max_batch_fit {estimate.max_batch}"
        )


def free_bytes(device: str) -> int | None:
    """Memory free for the model before it loads: the GPU's (torch.cuda.mem_get_info) on CUDA, else the host's
    (the least of MemAvailable, the cgroup's room and the address space left under ulimit -v). None when
    unknown."""
    if is_cuda(device):
        return int(torch.cuda.mem_get_info()[0])
    from deploybench.instruments.host import available_memory_bytes

    return available_memory_bytes()
