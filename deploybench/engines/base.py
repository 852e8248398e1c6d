"""The engine interface: one backend deployed for one cell, as the measurement phases drive it.

deploybench.measure.phases asks an engine for phases only: load it, run timed generates (the warm-up,
TTFT, decode and profiled passes all call `run`), read the memory it holds, ask its settings and what
it built, run its afterwards passes, and close it on every exit path. Nothing here names a torch
model, so an engine outside this process (a server driven by a client) implements it as well as the
in-process ones (deploybench.engines.in_process); engines.factory picks one from the cell's backend.

Its answers are typed records; where they become the row's columns, their fields carry the columns' names
(the metric catalogue), so measure/ lays them out without naming a column again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deploybench.enums import ExpertsRead
from deploybench.plan.spec import CellSpec, canonical_json

if TYPE_CHECKING:  # records of torch-side instruments: an engine outside this process need not import them
    from deploybench.analytic.boundness import StepProfile
    from deploybench.engines.timing import RunTiming
    from deploybench.instruments.coverage import Coverage
    from deploybench.instruments.memory import PeakMemory


@dataclass(frozen=True)
class LoadFigures:
    """What loading found: its wall time, the weights resident after it, the prompts' build and length."""

    load_s: float
    weights_bytes: int | None  # None where nothing measures device memory (CPU)
    prompt_mode: str
    context_tokens_measured: int


@dataclass(frozen=True)
class GenerationSettings:
    """The settings a full-length run applies, named as the engine names them (generate()'s RECORDED_SETTINGS
    after its merging, compiled_loop's sampler, a server's request): the row keeps them as canonical JSON.
    A setting the engine does not have is absent, which is not the same as one it leaves unset (None)."""

    applied: Mapping[str, str | int | float | bool | None]

    def to_json(self) -> str:
        return canonical_json(dict(self.applied))


@dataclass(frozen=True)
class Implementations:
    """The attention and experts code paths the model runs (every row records them)."""

    attn_implementation: str
    experts_implementation: str  # "n/a" for a dense model
    experts_read_per_token: ExpertsRead


@dataclass(frozen=True)
class DecodeBuild:
    """How the engine built its decode step beyond the model's own code paths: compiled_loop's fusions,
    decode-attention kernel and decode experts path. The defaults say nothing was built (generate())."""

    fusions: tuple[str, ...] = ()
    fusions_skipped: tuple[str, ...] = ()  # "<fusion>: <why it does not apply>"
    decode_attention_kernel: str | None = None
    decode_experts_implementation: str | None = None  # None for a dense model


@dataclass(frozen=True)
class EngineFacts:
    """What an engine built for its cell."""

    implementations: Implementations
    build: DecodeBuild = DecodeBuild()


class Engine(ABC):
    """One backend for one cell. Call `load` first and `close` on every exit path (it may come before,
    during or after a failed load, and more than once); the rest only between the two."""

    def __init__(self, cell: CellSpec, device: str):
        self.cell = cell
        self.device = device

    @abstractmethod
    def load(self) -> LoadFigures:
        """Load or start the engine for the cell and build the batch's prompts."""

    @abstractmethod
    def run(self, new_tokens: int, i: int, clock: bool) -> tuple[RunTiming, object]:
        """One synchronised generation of exactly `new_tokens` tokens for every sequence of the batch, seeded
        with the cell's seed + i; per-token stamps when `clock`. Returns the timing and the output, whose KV
        cache stays alive until the caller drops it."""

    @abstractmethod
    def settings(self) -> GenerationSettings:
        """The generation settings a full-length run applies (after load)."""

    @abstractmethod
    def facts(self) -> EngineFacts:
        """What the engine built (after load)."""

    @abstractmethod
    def compiled(self) -> bool:
        """Whether the decode step ran compiled. Ask after the runs: generate() compiles on its first
        static-cache call."""

    @abstractmethod
    def kv_cache_bytes(self, output) -> int:
        """Bytes of the KV cache a run's `output` holds."""

    @abstractmethod
    def reset_peak_memory(self) -> None:
        """Start the window peak_memory reports on."""

    @abstractmethod
    def peak_memory(self) -> PeakMemory:
        """Peak device memory since reset_peak_memory."""

    def decode_step_profile(self) -> StepProfile | None:
        """Kernels and kernel time per decode step, from a profiled pass outside every timed window.
        None where this process cannot see the engine's kernels."""
        return None

    def expert_coverage(self) -> Coverage | None:
        """Distinct experts per MoE layer a decode step of the batch reads, recorded outside every timed
        window. None where there is nothing to record or no way to read the routers."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release everything the engine holds (a server: stop it)."""
