# deploybench: one measurement job per (model, backend, dtype, context, gen, decoding) cell,
# then consolidation -> TPOT-artifact check -> APE -> report. Logic lives in deploybench/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        CELL_FILES,
        "results/ape.parquet",
        "report/report.html",
        "report/report.tex",
