"""The generate() engine: transformers' generate() with a dynamic cache (backend eager) or a static one
(backend compiled: transformers compiles the decode step on a GPU), on the (batch, context) prompt ids,
every row checked to get exactly the tokens asked for (engines.batch)."""

from __future__ import annotations

from deploybench.engines import batch
from deploybench.engines.base import DecodeBuild, GenerationSettings
from deploybench.engines.in_process import InProcessEngine
from deploybench.engines.timing import effective_settings, generation_config
from deploybench.enums import Backend, CacheImplementation
from deploybench.plan.spec import CellSpec


class GenerateEngine(InProcessEngine):
    def __init__(self, cell: CellSpec, device: str, config):
        super().__init__(cell, device, config)
        static = cell.backend is Backend.COMPILED
        self.cache_implementation = CacheImplementation.STATIC if static else None
        self.cache_sized_by_length = static
        self.attention_mask = None
        self.eos_ids: list[int] = []

    def _build(self) -> tuple[GenerationSettings, DecodeBuild]:
        model = self.loaded.model
        self.attention_mask = batch.attention_mask(self.input_ids)
        full_length = generation_config(self.cell.decoding, self.cell.gen, self.pad_id, self.cache_implementation)
        self.eos_ids = batch.effective_eos_ids(model, full_length)  # once: the same for every run's length
        return GenerationSettings(effective_settings(model, full_length)), DecodeBuild()

    def run(self, new_tokens: int, i: int, clock: bool):
        gen_config = generation_config(self.cell.decoding, new_tokens, self.pad_id, self.cache_implementation)
        seed = self.cell.measurement.seed + i
        return batch.timed_generate_batch(
            self.loaded.model, self.input_ids, self.attention_mask, gen_config, self.device, seed, clock, self.eos_ids
        )

    def compiled(self) -> bool:
        # transformers compiles generate()'s decode step itself when the cache is static on a GPU.
        return hasattr(self.loaded.model, "_compiled_call")

    def close(self) -> None:
        self.attention_mask = None
        super().close()
