"""The compiled_loop engine: the cell's model decoded by CompiledDecodeLoop (decode_loop.py), built with
the model entry's compiled_loop options (fusions, decode-attention kernel, decode experts path)."""

from __future__ import annotations

from deploybench.engines.base import DecodeBuild, GenerationSettings
from deploybench.engines.compiled_loop.decode_loop import CompiledDecodeLoop
from deploybench.engines.in_process import InProcessEngine
from deploybench.plan.loop_options import DEFAULT


class CompiledLoopEngine(InProcessEngine):
    loop: CompiledDecodeLoop | None = None

    def _build(self) -> tuple[GenerationSettings, DecodeBuild]:
        cell = self.cell
        options = cell.model.compiled_loop or DEFAULT
        model, batch = self.loaded.model, self.input_ids.shape[0]
        self.loop = CompiledDecodeLoop(model, cell.decoding, cell.context, cell.gen, self.device, options, batch=batch)
        temperature, top_k, top_p = cell.decoding.filters  # what its own sampler applies
        settings = {"do_sample": cell.decoding.do_sample, "max_new_tokens": cell.gen, "min_new_tokens": cell.gen}
        if cell.decoding.do_sample:
            settings |= {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        return GenerationSettings(settings), self.loop.build

    def run(self, new_tokens: int, i: int, clock: bool):
        return self.loop.run(self.input_ids, new_tokens, self.cell.measurement.seed + i, clock)

    def compiled(self) -> bool:
        return True

    def close(self) -> None:
        self.loop = None
        super().close()
