# One job per cell. The command line stays fixed: Snakemake reruns a cell when its params
# (the cell's settings + harness version) change, not when library code does.


rule measure:
    output:
        CELL_PATTERN,
    log:
        "logs/measure/{model}/{backend}-{dtype}/c{context}-g{gen}-{decoding}.log",
    benchmark:
        "logs/benchmarks/measure/{model}/{backend}-{dtype}/c{context}-g{gen}-{decoding}.tsv"
    resources:
        gpu=1,
    params:
        spec=measure_params,
    shell:
        "{PYTHON} scripts/measure_cell.py --spec-json {params.spec:q} --out {output:q} > {log:q} 2>&1"
