# Config -> typed config -> cells, per-cell params and wildcard constraints. No rules here.
# deploybench is imported as installed (`make` installs this checkout editable), exactly as the
# jobs' scripts import it, so Snakemake and every job use one copy of the library.
import sys
from pathlib import Path

from deploybench.plan import naming
from deploybench.plan.config import (
    all_cells,
    cell_params,
    check_duplicate_keys,
    find_cell,
    validate_config,
)
from deploybench.plan.config_files import check_overlays, load_yaml_file
from deploybench.plan.machine import check_machine, gather_host_facts
from deploybench.engines.model_check import check_models
from deploybench.enums import Backend, DType, wildcard_regex

PYTHON = sys.executable

# Validate before any job is scheduled: a bad config stops here, naming the key (a YAML error: file and line).
for _configfile in workflow.configfiles:
    load_yaml_file(_configfile)
    check_duplicate_keys(_configfile)
_OVERLAYS = [str(path) for path in workflow.overwrite_configfiles]
check_overlays(
    [f for f in workflow.configfiles if str(Path(f).absolute()) not in _OVERLAYS],
    _OVERLAYS,
    replace=workflow.config_settings.replace_workflow_config,
)
SETTINGS = validate_config(config)
# Every model instantiated without weights (its config, its head shapes, its skeleton on the meta device):
# a model transformers cannot build stops here, naming it. Cached by content; not again inside a job.
MODEL_PARAMS = (
    check_models(SETTINGS, ".snakemake/deploybench/model-checks.json")
    if workflow.is_main_process
    else {}
)

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
    """Every file of every external table's folder: editing, adding or removing one reruns consolidation
    and what follows it (a folder as input would only be compared by the folder's own time stamp).
    """
    files = []
    for table in SETTINGS.analysis.external_tables:
        root = Path(table.path)
        found = [root] if root.is_file() else root.rglob("*")
        files += sorted(
            str(p)
            for p in found
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    return files


def check_machine_before_jobs():
    """Once, before the first job runs (onstart): can this host run the measure jobs about to start?
    Skipped under a cluster executor, whose jobs run on other machines."""
    if not workflow.local_exec:
        return
    cells = [
        find_cell(SETTINGS, job.wildcards, CELL_SET)
        for job in workflow.dag.needrun_jobs()
        if job.rule.name == "measure"
    ]
    if cells:
        check_machine(SETTINGS, cells, gather_host_facts(), MODEL_PARAMS)
    check_engines_before_jobs()  # serve.smk: the serving engines' interpreters


onstart:
    check_machine_before_jobs()
