"""The columns that say which cell a row belongs to and what produced it: every row has them, measured,
failed or crashed, from whichever engine."""

from __future__ import annotations

from deploybench import HARNESS_VERSION
from deploybench.plan.spec import CellSpec
from deploybench.results.schema import SCHEMA_VERSION


def identity_columns(cell: CellSpec) -> dict:
    decoding = cell.decoding
    return {
        "cell_id": cell.cell_id,
        "model": cell.model_name,
        "backend": cell.backend,
        "dtype": cell.dtype,
        "context_tokens": cell.context,
        "gen_tokens": cell.gen,
        "decoding": cell.decoding_name,
        "spec_json": cell.spec_json(),
        "harness_version": HARNESS_VERSION,
        "schema_version": SCHEMA_VERSION,
        "source": "deploybench",
        "do_sample": decoding.do_sample,
        "temperature": decoding.temperature,
        "top_p": decoding.top_p,
        "top_k": decoding.top_k,
        "seed": cell.measurement.seed,
        "weights_source": cell.model.source,
        "model_ref": cell.model.ref,
        "cache_implementation": cell.cache_implementation,
        "batch_size": cell.batch,
    }
