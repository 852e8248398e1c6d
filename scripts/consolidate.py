"""Rule adapter: cell Parquets + external tables -> results/consolidated.parquet (+ .csv beside it)."""

import argparse
import json

from deploybench.results.consolidate import consolidate, write_table
from deploybench.results.rule_log import rule_log


def main(cells, external_tables, root, output):
    df = consolidate(list(cells), list(external_tables or []), root)
    write_table(df, output)
    return df


if "snakemake" in globals():
    sm = globals()["snakemake"]
    with rule_log(sm.log[0], "consolidate") as log:
        log.info(
            "%d cell files, %d serving groups, external tables: %s",
            len(sm.input.cells),
            len(sm.input.serving),
            [t["name"] for t in sm.params.external_tables],
        )
        from deploybench.measure.serve_group import serving_cells

        cells = [*sm.input.cells, *serving_cells(sm.input.serving)]
        df = main(cells, sm.params.external_tables, sm.params.root, sm.output[0])
        log.info("%d rows by source %s -> %s", len(df), df["source"].value_counts().to_dict(), sm.output[0])
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("cells", nargs="*", help="per-cell Parquet files")
    ap.add_argument("--external-tables", default="[]", help="JSON list of external table specs")
    ap.add_argument("--root", default=".", help="folder the external table paths are relative to")
    ap.add_argument("--output", default="results/consolidated.parquet")
    a = ap.parse_args()
    main(a.cells, json.loads(a.external_tables), a.root, a.output)
