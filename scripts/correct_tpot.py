"""Rule adapter: consolidated.parquet -> corrected.parquet (+ .csv): the TPOT-artifact check."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for deploybench
from deploybench.consolidate import read_table, write_table  # noqa: E402
from deploybench.tpot import correct_tpot  # noqa: E402


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
