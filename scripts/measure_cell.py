"""Adapter the measure rule calls: measure one cell and write its Parquet row.

    python scripts/measure_cell.py --spec-json '{"cell": {...}, "harness_version": "1"}' --out PATH

With DEPLOYBENCH_WARM=1 the cell runs in a fork of a warm server (imports paid once).
Also runnable by hand with every option of `python -m deploybench measure --help`.
"""

import os
import sys

if __name__ == "__main__":
    if os.environ.get("DEPLOYBENCH_WARM") == "1":
        # Fork from a server that has torch imported already (see deploybench/measure/warm.py).
        from deploybench.measure.warm import run_via_server

        code = run_via_server(["measure", *sys.argv[1:]])
        if code < 0:  # the forked child was killed: keep the cell's last good row, as after any failed attempt
            from deploybench.cli import after_killed

            code = after_killed(["measure", *sys.argv[1:]], code)
        sys.exit(code)
    from deploybench.cli import main

    sys.exit(main(["measure", *sys.argv[1:]]))
