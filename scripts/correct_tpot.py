"""Rule adapter: consolidated.parquet -> corrected.parquet (+ .csv): the TPOT-artifact check."""

import argparse

from deploybench.results.consolidate import read_table, write_table
from deploybench.results.rule_log import rule_log
from deploybench.results.tpot import correct_tpot


def main(table, output):
    df = correct_tpot(read_table(table))
    write_table(df, output)
    return df


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with rule_log(sm.log[0], "correct_tpot") as log:
        df = main(sm.input[0], sm.output[0])
        checks = df["tpot_check"].value_counts(dropna=False).to_dict() if "tpot_check" in df else {}
        log.info("%s: %d rows, tpot_check %s -> %s", sm.input[0], len(df), checks, sm.output[0])
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("table", nargs="?", default="results/consolidated.parquet")
    ap.add_argument("--output", default="results/corrected.parquet")
    a = ap.parse_args()
    main(a.table, a.output)
