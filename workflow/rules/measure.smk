# One job per cell. The command line stays fixed: Snakemake reruns a cell when its params
# (the cell's settings + harness version) change, not when library code does.


rule measure:
    output:
        CELL_PATH,
    log:
        CELL_LOG,
    benchmark:
        CELL_BENCHMARK
    resources:
        gpu=1,
    params:
        spec=measure_params,
    shell:
        "{PYTHON} scripts/measure_cell.py --spec-json {params.spec:q} --out {output:q} > {log:q} 2>&1"
