# deploybench: one measurement job per (model, backend, dtype, context, gen, decoding) cell, and one serve job
# per serving engine's server group (each of its load points a cell),
# then consolidation -> TPOT-artifact check -> APE -> report. Logic lives in deploybench/.
import os

from snakemake.utils import min_version

from deploybench.plan.config_files import load_yaml_file

min_version("9.0")

# Read config.yaml before Snakemake does: a file that is not YAML (a tab) or is empty is named with its line.
if os.path.exists("config.yaml"):
    load_yaml_file("config.yaml")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/serve.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        CELL_FILES,
        SERVE_MARKERS,
        # every table, not only the last: a deleted consolidated or corrected table is made again
        "results/consolidated.parquet",
        "results/corrected.parquet",
        "results/ape.parquet",
        "report/report.html",
        "report/report.tex",
