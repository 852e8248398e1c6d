"""What the engines that run the model in this process share: loading it and the batch's prompts, its memory
and KV bytes, the afterwards passes (a profiled pass, the routers recorded) and releasing it. Each subclass
builds its own runs: engines.generate (generate()) and engines.compiled_loop.engine (our decode loop).
"""

from __future__ import annotations

import gc
import time
from abc import abstractmethod

import torch

from deploybench.analytic import boundness, kvcache
from deploybench.engines import batch, models
from deploybench.engines.base import DecodeBuild, Engine, EngineFacts, GenerationSettings, LoadFigures
from deploybench.engines.timing import generation_config, isolate_generation_config, synchronize
from deploybench.enums import ExpertsRead
from deploybench.instruments import coverage, memory, profiler
from deploybench.instruments.device import is_cuda
from deploybench.plan.spec import CellSpec


class InProcessEngine(Engine):
    # Whether the cache is sized by the generate's length (generate() with a static cache): the profiled
    # pass then runs the cell's own length, as another length would compile the step again.
    cache_sized_by_length = False

    def __init__(self, cell: CellSpec, device: str, config):
        super().__init__(cell, device)
        self.config = config  # the model entry's transformers config
        self.loaded: models.LoadedModel | None = None
        self.input_ids: torch.Tensor | None = None  # (batch, context)
        self.pad_id = 0
        self._settings: GenerationSettings | None = None
        self._facts: EngineFacts | None = None

    def load(self) -> LoadFigures:
        cell = self.cell
        start = time.perf_counter()
        loaded = models.load_model(cell.model, cell.dtype, self.device, seed=cell.measurement.seed)
        synchronize(self.device)
        load_s = time.perf_counter() - start
        weights_bytes = memory.allocated_bytes(self.device)
        prompts = batch.prompt_batch(loaded, self.config, cell.context, cell.batch, cell.measurement.seed)
        input_ids, _ = batch.batch_tensors(prompts, self.device)
        self.attach(loaded, input_ids)
        return LoadFigures(load_s, weights_bytes, prompts.prompt_mode, prompts.context_tokens_measured)

    def attach(self, loaded: models.LoadedModel, input_ids: torch.Tensor) -> None:
        """Build the runs on a model and prompt ids already in memory: load() does after loading; a
        benchmark comparing builds on one model's weights and prompt calls it directly."""
        self.loaded, self.input_ids = loaded, input_ids
        self.pad_id = pad_id(loaded, self.config)
        isolate_generation_config(loaded.model)  # every engine: the coverage pass runs generate() on this model
        self._settings, build = self._build()
        # After the build: compiled_loop sets its own attention implementation.
        self._facts = EngineFacts(models.implementations(loaded.model), build)

    @abstractmethod
    def _build(self) -> tuple[GenerationSettings, DecodeBuild]:
        """Prepare the runs on self.loaded and self.input_ids; the settings they apply and what was built."""

    def settings(self) -> GenerationSettings:
        if self._settings is None:
            raise RuntimeError("load the engine first")
        return self._settings

    def facts(self) -> EngineFacts:
        if self._facts is None:
            raise RuntimeError("load the engine first")
        return self._facts

    def kv_cache_bytes(self, output) -> int:
        return kvcache.measured_kv_bytes(output.past_key_values)

    def reset_peak_memory(self) -> None:
        memory.reset_peak(self.device)

    def peak_memory(self) -> memory.PeakMemory:
        return memory.peak(self.device)

    def decode_step_profile(self) -> boundness.StepProfile | None:
        tokens = boundness.profile_tokens(self.cell.gen, cache_sized_by_length=self.cache_sized_by_length)
        return profiler.profile_decode_steps(self.run, tokens, self.device)

    def expert_coverage(self) -> coverage.Coverage | None:
        """For a routed-experts MoE: an eager generate with the routers recorded (hooks do not run inside
        compiled graphs)."""
        if self.facts().implementations.experts_read_per_token != ExpertsRead.ROUTED or self.cell.gen < 2:
            return None
        gen_config = generation_config(self.cell.decoding, self.cell.gen, self.pad_id)
        torch.manual_seed(self.cell.measurement.seed)
        mask = batch.attention_mask(self.input_ids)
        return coverage.record_generate(self.loaded.model, self.input_ids, mask, gen_config)

    def close(self) -> None:
        """Drop the model and the prompts, and give their device memory back (subclasses drop theirs first)."""
        self.loaded = self.input_ids = None
        gc.collect()
        if is_cuda(self.device):
            torch.cuda.empty_cache()


def pad_id(loaded: models.LoadedModel, config) -> int:
    """The tokenizer's pad or EOS id, else the config's, else 0: rows are never padded (equal lengths),
    but generate() wants one."""
    tokenizer = loaded.tokenizer
    for candidate in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
        getattr(config, "pad_token_id", None),
        getattr(config, "eos_token_id", None),
    ):
        if isinstance(candidate, list):
            candidate = candidate[0] if candidate else None
        if isinstance(candidate, int):
            return candidate
    return 0
