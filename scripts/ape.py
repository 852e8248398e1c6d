"""Rule adapter: corrected.parquet -> ape.parquet (+ .csv): APE columns and baseline ratios."""

import argparse
import json

from deploybench.results.ape import compute_ape
from deploybench.results.consolidate import read_table, write_table
from deploybench.results.rule_log import rule_log


def main(table, baseline_model, output):
    df = compute_ape(read_table(table), baseline_model)
    write_table(df, output)
    return df


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with rule_log(sm.log[0], "ape") as log:
        df = main(sm.input[0], sm.params.baseline_model, sm.output[0])
        log.info("%s: %d rows, baseline %s -> %s", sm.input[0], len(df), sm.params.baseline_model, sm.output[0])
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("table", nargs="?", default="results/corrected.parquet")
    ap.add_argument("--baseline-model", required=True, help='name, or JSON {"source": "name"}')
    ap.add_argument("--output", default="results/ape.parquet")
    a = ap.parse_args()
    b = a.baseline_model
    main(a.table, json.loads(b) if b.startswith("{") else b, a.output)
