"""Rule adapter: cell Parquets + external tables -> results/consolidated.parquet (+ .csv beside it)."""

import argparse
import json

from deploybench.results.consolidate import consolidate, write_table


def main(cells, external_tables, root, output):
    write_table(consolidate(list(cells), list(external_tables or []), root), output)


if "snakemake" in globals():
    sm = globals()["snakemake"]
    main(sm.input.cells, sm.params.external_tables, sm.params.root, sm.output[0])
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("cells", nargs="*", help="per-cell Parquet files")
    ap.add_argument("--external-tables", default="[]", help="JSON list of external table specs")
    ap.add_argument("--root", default=".", help="folder the external table paths are relative to")
    ap.add_argument("--output", default="results/consolidated.parquet")
    a = ap.parse_args()
    main(a.cells, json.loads(a.external_tables), a.root, a.output)
