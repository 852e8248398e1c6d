"""How a cell is named: its id and the paths that hold its row, log and Snakemake benchmark.

Declared once; the Snakemake rules, the cell spec, the report and the tests format these.
Every axis of a cell appears in its id, so two cells never share a file.
"""

from __future__ import annotations

# Model and decoding-mode names become path parts: the config refuses others, and the Snakemake
# wildcards match exactly these (unanchored regular expressions; anchor them to test a whole name).
MODEL_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
DECODING_NAME = r"[A-Za-z0-9_.]+"

# The axes in the order the id spells them; the id's text is what users see in paths and tables.
# Schema 2.0 added the batch size (b1 for every cell before it; deploybench.results.schema migrates old rows).
CELL_ID = "{model}/{backend}-{dtype}/c{context}-g{gen}-b{batch}-{decoding}"
CELL_PATH = f"results/cells/{CELL_ID}.parquet"
CELL_LOG = f"logs/measure/{CELL_ID}.log"
CELL_BENCHMARK = f"logs/benchmarks/measure/{CELL_ID}.tsv"


def cell_id(model: str, backend: str, dtype: str, context: int, gen: int, decoding: str, batch: int = 1) -> str:
    return CELL_ID.format(
        model=model, backend=backend, dtype=dtype, context=context, gen=gen, batch=batch, decoding=decoding
    )
