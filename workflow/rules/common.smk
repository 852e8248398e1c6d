# Config -> cells, per-cell params and wildcard constraints. No rules here.
# deploybench is imported as installed (`make` installs this checkout editable), exactly as the
# jobs' scripts import it, so Snakemake and every job use one copy of the library.
import sys

from deploybench.config import (
    CELL_PATTERN,
    all_cells,
    cell_params,
    cells_by_study,
    check_duplicate_keys,
    find_cell,
    validate_config,
)

PYTHON = sys.executable

# Validate before any job is scheduled: a bad config stops here, naming the key.
for _configfile in workflow.configfiles:
    check_duplicate_keys(_configfile)
validate_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")

CELLS = all_cells(config)
CELL_SET = set(CELLS)
CELL_FILES = [cell.path for cell in CELLS]


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    backend=r"eager|compiled_loop|compiled",
    dtype=r"bfloat16|float16|float32",
    context=r"\d+",
    gen=r"\d+",
    decoding=r"[A-Za-z0-9_.]+",


def measure_params(wildcards):
    """Only this cell's effective settings, as canonical JSON: the rerun trigger."""
    return cell_params(config, find_cell(config, wildcards, CELL_SET))


def external_table_paths():
    return [
        table["path"] for table in config.get("analysis", {}).get("external_tables", [])
    ]
