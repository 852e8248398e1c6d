"""The result schema: one row per cell, written atomically to Parquet with an explicit schema.

The columns, their types and definitions come from the metric catalogue (deploybench/metrics.yaml).
Column names carry their unit. Adding columns is free; renaming one needs a SCHEMA_VERSION bump.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from deploybench import metrics

SCHEMA_VERSION = "1.0"

_ARROW_TYPES = {
    metrics.ValueType.STR: pa.string(),
    metrics.ValueType.INT: pa.int64(),
    metrics.ValueType.FLOAT: pa.float64(),
    metrics.ValueType.BOOL: pa.bool_(),
    metrics.ValueType.FLOAT_LIST: pa.list_(pa.float64()),
    metrics.ValueType.STR_LIST: pa.list_(pa.string()),
}


def arrow_type(metric: metrics.Metric) -> pa.DataType:
    return _ARROW_TYPES[metric.type]


# The result schema is the catalogue's cell-stage columns, in catalogue order.
CELL_METRICS = metrics.of_stage(metrics.Stage.CELL)
SCHEMA = pa.schema(
    [pa.field(m.name, arrow_type(m)) for m in CELL_METRICS],
    metadata={"deploybench_schema_version": SCHEMA_VERSION},
)
COLUMN_NAMES = [m.name for m in CELL_METRICS]


def empty_row() -> dict:
    """A row with every column present and null."""
    return dict.fromkeys(COLUMN_NAMES)


def to_table(rows: list[dict]) -> pa.Table:
    """Rows -> table with the explicit schema; unknown keys are an error (typos lose data)."""
    for row in rows:
        unknown = set(row) - set(COLUMN_NAMES)
        if unknown:
            raise KeyError(f"result row has columns not in the schema: {sorted(unknown)}")
    full = [{**empty_row(), **row} for row in rows]
    return pa.Table.from_pylist(full, schema=SCHEMA)


def write_row(row: dict, path: str | os.PathLike) -> Path:
    """Write one row atomically: a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = to_table([row])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_rows(path: str | os.PathLike) -> list[dict]:
    return pq.read_table(path).to_pylist()
