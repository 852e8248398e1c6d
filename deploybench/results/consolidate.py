"""One table of every result: the per-cell rows measured here plus imported external rows.

`write_table` writes any of the analysis tables (consolidated, corrected, ape) as Parquet with the
result schema's types for known columns, plus a CSV copy beside it for people and spreadsheets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deploybench.results import metrics
from deploybench.results.importer import import_table
from deploybench.results.schema import SCHEMA, arrow_type, read_rows, to_table, write_atomically

SORT_KEY = [
    "source",
    "model",
    "backend",
    "dtype",
    "context_tokens",
    "gen_tokens",
    "decoding",
]
# Nullable pandas dtypes keep integer columns integer and booleans boolean when nulls are present.
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


class CorruptCellError(ValueError):
    """A cell file that cannot be read (cut short by a full disk, a copy that stopped); names the file and the
    command that remeasures it."""


def read_cells(cell_paths) -> list[dict]:
    rows = []
    for path in cell_paths:
        try:
            cell_rows = read_rows(path)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptCellError(
                f"{path}: not a readable Parquet file ({' '.join(str(exc).split())}). Remeasure the cell with: "
                f"snakemake --forcerun {path}  (every finished row is also under results/archive/)"
            ) from None
        for row in cell_rows:
            try:
                to_table([row])
            except KeyError as err:
                raise KeyError(f"{path}: {err.args[0]}") from None
            row["source"] = row.get("source") or "deploybench"  # measured by this harness
            rows.append(row)
    return rows


def to_frame(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    for field in table.schema:  # list columns as Python lists (not numpy arrays)
        if pa.types.is_list(field.type):
            df[field.name] = [None if v is None else list(v) for v in df[field.name]]
    return df


def consolidate(cell_paths: list, external_specs: list[dict], root) -> pd.DataFrame:
    """Every cell row plus every imported row, in the result schema, one row per (source, cell_id)."""
    rows = read_cells(cell_paths)
    for spec in external_specs or []:
        rows += import_table(spec, Path(root))
    seen: set[tuple] = set()
    for row in rows:
        key = (row["source"], row["cell_id"])
        if key in seen:
            raise ValueError(f"two rows for cell {row['cell_id']!r} from {row['source']!r}")
        seen.add(key)
    df = to_frame(to_table(rows))
    return df.sort_values(SORT_KEY, na_position="last", kind="stable").reset_index(drop=True)


def arrow_table(df: pd.DataFrame) -> pa.Table:
    """Every column with its catalogue type (ints stay ints); a column the catalogue lacks is an error."""
    catalogue = metrics.by_name()
    unknown = [col for col in df.columns if col not in catalogue]
    if unknown:
        raise KeyError(f"columns not in the metric catalogue (deploybench/results/metrics.yaml): {unknown}")
    fields = [pa.field(col, arrow_type(catalogue[col])) for col in df.columns]
    arrays = [pa.Array.from_pandas(df[f.name], type=f.type) for f in fields]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=SCHEMA.metadata))


def csv_frame(table: pa.Table) -> pd.DataFrame:
    """The table for the CSV copy: list columns as JSON text."""
    df = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    for field in table.schema:
        if pa.types.is_list(field.type):
            df[field.name] = [None if v is None else json.dumps([_plain(x) for x in v]) for v in df[field.name]]
    return df


def _plain(x):
    return x.item() if hasattr(x, "item") else x


def write_table(df: pd.DataFrame, parquet_path) -> Path:
    """Write Parquet and a CSV beside it (same stem), together atomically (schema.write_atomically)."""
    path = Path(parquet_path)
    table = arrow_table(df)
    write_atomically(
        {
            path: lambda tmp: pq.write_table(table, tmp),
            path.with_suffix(".csv"): lambda tmp: csv_frame(table).to_csv(tmp, index=False),
        }
    )
    return path


def read_table(parquet_path) -> pd.DataFrame:
    return to_frame(pq.read_table(parquet_path))
