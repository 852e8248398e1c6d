"""The result schema: one row per cell, written atomically to Parquet with an explicit schema.

The columns, their types and definitions come from the metric catalogue (deploybench/results/metrics.yaml).
Column names carry their unit. Adding columns is free; renaming one needs a SCHEMA_VERSION bump.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from deploybench.enums import Stage, ValueType
from deploybench.results import metrics
from deploybench.results.values import is_missing

# 2.0: the batch axis (batch_size; cell ids spell b<batch>). Rows of 1.x are migrated when read.
SCHEMA_VERSION = "2.0"
# The batch of a row that names none: schema 1.x rows and the study's tables ran one request at a time.
UNBATCHED = 1

_ARROW_TYPES = {
    ValueType.STR: pa.string(),
    ValueType.INT: pa.int64(),
    ValueType.FLOAT: pa.float64(),
    ValueType.BOOL: pa.bool_(),
    ValueType.FLOAT_LIST: pa.list_(pa.float64()),
    ValueType.STR_LIST: pa.list_(pa.string()),
}


def arrow_type(metric: metrics.Metric) -> pa.DataType:
    return _ARROW_TYPES[metric.type]


# The result schema is the catalogue's cell-stage columns, in catalogue order.
CELL_METRICS = metrics.of_stage(Stage.CELL)
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


def write_atomically(writers: dict[Path, Callable[[Path], object]]) -> None:
    """Write every file, then rename them all into place: a reader finds each file old or new, never
    part-written, and a writer that fails leaves every old file as it was.

    Each `writer(tmp)` writes its target's content to a temp file beside the target. Every result file
    gets one mode: 0666 less the umask, as open() creates files (tempfile's 0600 would keep them private).
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for target, write in writers.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            temps.append((tmp, target))
            write(tmp)
        for tmp, target in temps:
            os.replace(tmp, target)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)


def write_row(row: dict, path: str | os.PathLike) -> Path:
    """Write one row atomically (write_atomically)."""
    path = Path(path)
    table = to_table([row])
    write_atomically({path: lambda tmp: pq.write_table(table, tmp)})
    return path


def read_rows(path: str | os.PathLike) -> list[dict]:
    """A cell file's rows, migrated to the current schema."""
    return [migrate(row) for row in pq.read_table(path).to_pylist()]


def batch_of(row: dict) -> int:
    """The batch a row ran at: its batch_size, else UNBATCHED."""
    batch = row.get("batch_size")
    return UNBATCHED if is_missing(batch) else int(batch)


def migrate(row: dict) -> dict:
    """A row of an older schema in the current one. 1.x -> 2.0: every 1.x cell was measured at batch 1,
    so batch_size is 1 and its cell id gains b1 ('.../c2048-g64-greedy' -> '.../c2048-g64-b1-greedy')."""
    if not str(row.get("schema_version") or "").startswith("1."):
        return row
    migrated = {**row, "batch_size": UNBATCHED, "schema_version": SCHEMA_VERSION}
    cell = row.get("cell_id")
    if cell and not _BATCHED_AXES.match(cell.rsplit("/", 1)[-1]):
        head, axes = cell.rsplit("/", 1)
        context, gen, decoding = axes.split("-", 2)  # decoding names hold no '-'
        migrated["cell_id"] = f"{head}/{context}-{gen}-b1-{decoding}"
    return migrated


_BATCHED_AXES = re.compile(r"^c\d+-g\d+-b\d+-")
