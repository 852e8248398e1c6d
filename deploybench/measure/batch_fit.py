"""The estimate a cell's batch is checked with before its model loads (deploybench.analytic.capacity):
weights + B x (KV + activations of one sequence) against the free memory, refused as an oom row above it.

The activation figure of one sequence comes, in this order, from:

- measured: the row, in results/cells on this machine, of the same cell at the largest smaller batch (every
  setting but the batch and the measurement's the same, status ok and not superseded, the same device_name,
  its memory figures present). Its weights, KV and activations per sequence go through
  capacity.measured_estimate, the function that gave that row its max_batch_fit, so at equal free memory the
  refusal's threshold is that row's max_batch_fit;
- analytic: capacity.prefill_activations from the architecture, with the weights from the parameter count and
  the KV from the architecture (deploybench.analytic.kvcache).

Rows record the estimate (free_bytes_before_load, predicted_peak_bytes, predicted_activation_bytes_per_seq,
predicted_activation_source: deploybench.measure.cell_figures.batch_fit).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from deploybench.analytic import capacity, kvcache, params
from deploybench.engines import experts, models
from deploybench.enums import AttentionImplementation, Backend
from deploybench.plan import naming
from deploybench.plan.spec import CellSpec
from deploybench.results import archive
from deploybench.results.schema import batch_of, read_rows
from deploybench.results.values import is_missing

log = logging.getLogger(__name__)

# What a smaller batch's row must have to lend its memory figures.
MEASURED_FIGURES = ("peak_allocated_bytes", "weights_bytes", "kv_cache_bytes")
# Settings that may differ between that row's cell and this one.
_NOT_COMPARED = ("batch", "measurement")


def estimate(
    cell: CellSpec, config, meta, counts: dict, free_bytes: int, device_name: str | None, root: str | Path = "."
) -> capacity.BatchEstimate:
    """The estimate `cell` is checked with at `free_bytes`: from a smaller batch's row where there is one,
    else analytic. `meta`: the model on the meta device (params.build_meta_model), `counts` its parameter counts;
    `root`: the workflow directory that holds results/."""
    row = smaller_batch_row(cell, device_name, root)
    if row is not None:
        peak, weights, kv = (int(row[name]) for name in MEASURED_FIGURES)
        source = f"measured: {row['cell_id']}"
        return capacity.measured_estimate(free_bytes, peak, weights, kv, batch_of(row), source)
    dtype = models.TORCH_DTYPES[cell.dtype]
    activations = analytic_activations(cell, config, meta)
    return capacity.BatchEstimate(
        free_bytes=free_bytes,
        weights_bytes=capacity.weights_bytes_estimate(counts["total_params"], dtype),
        kv_bytes_per_seq=kvcache.analytic_kv_bytes(config, cell.context, cell.gen, dtype, cell.cache_implementation),
        activation_bytes_per_seq=activations.per_seq,
        activation_source=activations.describe(),
    )


def smaller_batch_row(cell: CellSpec, device_name: str | None, root: str | Path = ".") -> dict | None:
    """The good row of this cell at the largest batch below cell.batch, measured on a `device_name` device; None
    where there is none."""
    if cell.batch == 1 or device_name is None:
        return None
    ident = naming.cell_id(cell.model_name, cell.backend, cell.dtype, cell.context, cell.gen, cell.decoding_name, "*")
    mine = _compared(cell.spec_json())
    found = []
    for path in Path(root).glob(naming.cell_path(ident)):
        try:
            rows = read_rows(path)
        except Exception as exc:  # noqa: BLE001 - a torn file lends nothing; the estimate falls back
            log.warning("%s: unreadable (%s): not used for the batch estimate", path, exc)
            continue
        found += [
            row
            for row in rows
            if batch_of(row) < cell.batch
            and archive.is_good(row)
            and row.get("device_name") == device_name
            and not any(is_missing(row.get(name)) for name in MEASURED_FIGURES)
            and _compared(row.get("spec_json")) == mine
        ]
    return max(found, key=batch_of, default=None)


def _compared(spec_json: str | None) -> dict | None:
    if not spec_json:
        return None
    return {key: value for key, value in json.loads(spec_json).items() if key not in _NOT_COMPARED}


def analytic_activations(cell: CellSpec, config, meta) -> capacity.PrefillActivations:
    """capacity.prefill_activations with the attention and experts paths this cell's engine will take."""
    if cell.backend is Backend.COMPILED_LOOP:  # SDPA prefill where the class supports it (compiled_loop.attention)
        eager = not getattr(meta, "_supports_sdpa", False)
    else:  # the entry's implementation, else transformers' choice (set on the config by building the meta model)
        eager = (cell.model.attn_implementation or getattr(config, "_attn_implementation", None)) == (
            AttentionImplementation.EAGER
        )
    sinks = any(getattr(module, "sinks", None) is not None for module in meta.modules())
    implementation = cell.model.experts_implementation or getattr(config, "_experts_implementation", None)
    reads = experts.experts_read_per_token(models.is_moe(config), implementation)
    split = params.expert_split(meta, cell.model.active_params or None)
    dtype = models.TORCH_DTYPES[cell.dtype]
    return capacity.prefill_activations(config, split, cell.context, dtype, eager, sinks, reads)
