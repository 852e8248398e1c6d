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


# A serving cell is one load point of a server group: the cell id of its group's axes (batch 1: each request is
# one sequence) plus its load, LOAD_SUFFIX; only serving cells have one, so no other cell's id changes.
# -cc<N>: N requests in flight (closed loop); -r<rate>: requests per second (open loop), -bu<burstiness> added
# where the arrivals' burstiness is not 1 (Poisson).
LOAD_SUFFIX = {"concurrency": "-cc{value}", "request_rate": "-r{value}"}
BURSTINESS_SUFFIX = "-bu{value}"
# The server group (deploybench.plan.serving): one serve job, one server, every load point of these axes.
SERVE_GROUP_ID = "{model}/{backend}-{dtype}/c{context}-g{gen}-{decoding}"
SERVE_MARKER = f"results/serving/{SERVE_GROUP_ID}.json"
SERVE_LOG = f"logs/serve/{SERVE_GROUP_ID}.log"
SERVE_BENCHMARK = f"logs/benchmarks/serve/{SERVE_GROUP_ID}.tsv"
# The server's own log (appended: every start of the group's server, each headed by its command line).
SERVER_LOG = "logs/serve/{group}.server.log"


def cell_id(
    model: str, backend: str, dtype: str, context: int, gen: int, decoding: str, batch: int = 1, load: str = ""
) -> str:
    """The cell's id; `load`: a serving cell's load_suffix."""
    ident = CELL_ID.format(
        model=model, backend=backend, dtype=dtype, context=context, gen=gen, batch=batch, decoding=decoding
    )
    return ident + load


def cell_path(ident: str) -> str:
    """Where the row of the cell `ident` is (CELL_PATH for every cell, a serving cell's load suffix included)."""
    return f"results/cells/{ident}.parquet"


def load_suffix(mode: str, value: float, burstiness: float | None = None) -> str:
    """'-cc16', '-r2.5', '-r2.5-bu0.5' (numbers without exponent or trailing zeros)."""
    suffix = LOAD_SUFFIX[mode].format(value=_number(value))
    if burstiness is not None and burstiness != 1:
        suffix += BURSTINESS_SUFFIX.format(value=_number(burstiness))
    return suffix


def _number(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")
