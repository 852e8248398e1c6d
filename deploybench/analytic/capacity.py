"""The largest batch that fits in device memory, estimated before anything expensive is loaded.

Memory at batch B = weights + B x (KV of one sequence + activations of one sequence). The KV of a
sequence is analytic (deploybench.analytic.kvcache); the activations are measured: a run's peak allocated
bytes minus the weights and the KV it held, per sequence. Activations peak in the prefill
(eager attention holds B x heads x context^2 scores, which at large B and long contexts outgrow the KV)
and grow with B, so one measured peak at a smaller batch scales to the others.

A requested batch above the estimate is refused before the model loads: `check_batch_fits` raises
PredictedOutOfMemoryError, which deploybench.measure.failures.classify reads as failure_kind oom, so the
caller writes an out-of-memory row rather than crashing (as for a real torch.OutOfMemoryError).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deploybench.instruments.device import is_cuda

# Fraction of the free memory never planned for: the caching allocator's fragmentation and rounding,
# CUDA graph pools, cuBLAS workspaces and the transient buffers of ops the peak did not see.
DEFAULT_HEADROOM = 0.10


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
    (total_params x dtype bytes, or a batch-1 row's weights_bytes), analytic KV and measured activations."""

    free_bytes: int
    weights_bytes: int
    kv_bytes_per_seq: int
    activation_bytes_per_seq: float
    headroom: float = DEFAULT_HEADROOM

    @property
    def max_batch(self) -> int:
        return max_batch_fit(
            self.free_bytes, self.weights_bytes, self.kv_bytes_per_seq, self.activation_bytes_per_seq, self.headroom
        )

    def needed_bytes(self, batch: int) -> float:
        return bytes_at_batch(self.weights_bytes, self.kv_bytes_per_seq, self.activation_bytes_per_seq, batch)

    def exceeds(self, batch: int) -> bool:
        return batch > self.max_batch


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
            f"{(estimate.kv_bytes_per_seq + estimate.activation_bytes_per_seq) / 1e9:.3f} GB per sequence), "
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
