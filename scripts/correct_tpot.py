"""Rule adapter: consolidated.parquet -> corrected.parquet (+ .csv): the TPOT-artifact check."""

import argparse

from deploybench.results.consolidate import read_table, write_table
from deploybench.results.tpot import correct_tpot


def main(table, output):
    write_table(correct_tpot(read_table(table)), output)


if "snakemake" in globals():
    sm = globals()["snakemake"]
    main(sm.input[0], sm.output[0])
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("table", nargs="?", default="results/consolidated.parquet")
    ap.add_argument("--output", default="results/corrected.parquet")
    a = ap.parse_args()
    main(a.table, a.output)
