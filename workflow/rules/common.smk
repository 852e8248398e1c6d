# Config -> typed config -> cells, per-cell params and wildcard constraints. No rules here.
# deploybench is imported as installed (`make` installs this checkout editable), exactly as the
# jobs' scripts import it, so Snakemake and every job use one copy of the library.
import sys

from deploybench.plan import naming
from deploybench.plan.config import (
    all_cells,
    cell_params,
    check_duplicate_keys,
    find_cell,
    validate_config,
)
from deploybench.enums import Backend, DType, wildcard_regex

PYTHON = sys.executable

# Validate before any job is scheduled: a bad config stops here, naming the key.
for _configfile in workflow.configfiles:
    check_duplicate_keys(_configfile)
SETTINGS = validate_config(config)

CELLS = all_cells(SETTINGS)
CELL_SET = set(CELLS)
CELL_FILES = [cell.path for cell in CELLS]
# Where a cell's row, log and Snakemake benchmark go (measure.smk).
CELL_PATH = naming.CELL_PATH
CELL_LOG = naming.CELL_LOG
CELL_BENCHMARK = naming.CELL_BENCHMARK


wildcard_constraints:
    model=naming.MODEL_NAME,
    backend=wildcard_regex(Backend),
    dtype=wildcard_regex(DType),
    context=r"\d+",
    gen=r"\d+",
    batch=r"\d+",
    decoding=naming.DECODING_NAME,


def measure_params(wildcards):
    """Only this cell's effective settings, as canonical JSON: the rerun trigger."""
    return cell_params(SETTINGS, find_cell(SETTINGS, wildcards, CELL_SET))


def external_table_paths():
    return [table.path for table in SETTINGS.analysis.external_tables]
