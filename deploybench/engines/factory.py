"""The engine that runs a cell's backend."""

from __future__ import annotations

from deploybench.engines.base import Engine
from deploybench.engines.compiled_loop.engine import CompiledLoopEngine
from deploybench.engines.generate import GenerateEngine
from deploybench.enums import Backend
from deploybench.plan.spec import CellSpec


def engine_for(cell: CellSpec, device: str, config) -> Engine:
    """A fresh, unloaded engine for the cell; `config` is its model entry's transformers config."""
    match cell.backend:
        case Backend.EAGER | Backend.COMPILED:
            return GenerateEngine(cell, device, config)
        case Backend.COMPILED_LOOP:
            return CompiledLoopEngine(cell, device, config)
    raise ValueError(f"no engine runs backend {cell.backend!r}")
