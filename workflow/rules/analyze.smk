# Consolidate every cell (plus external tables) -> TPOT-artifact check -> APE.
# Cheap, so they run on the submitting host even under a cluster profile.


localrules:
    consolidate,
    correct_tpot,
    ape,


rule consolidate:
    input:
        cells=CELL_FILES,
        serving=SERVE_MARKERS,  # serve.smk: each marker lists its group's cell files
        external=external_table_paths(),
    output:
        parquet="results/consolidated.parquet",
        csv="results/consolidated.csv",
    log:
        "logs/consolidate.log",
    params:
        external_tables=config.get("analysis", {}).get("external_tables", []),
        root=workflow.basedir,
    script:
        "../../scripts/consolidate.py"


rule correct_tpot:
    input:
        "results/consolidated.parquet",
    output:
        parquet="results/corrected.parquet",
        csv="results/corrected.csv",
    log:
        "logs/correct_tpot.log",
    script:
        "../../scripts/correct_tpot.py"


rule ape:
    input:
        "results/corrected.parquet",
    output:
        parquet="results/ape.parquet",
        csv="results/ape.csv",
    log:
        "logs/ape.log",
    params:
        baseline_model=config.get("analysis", {}).get("baseline_model"),
    script:
        "../../scripts/ape.py"
