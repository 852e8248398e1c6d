"""Adapter the measure rule calls: measure one cell and write its Parquet row.

    python scripts/measure_cell.py --spec-json '{"cell": {...}, "harness_version": "1"}' --out PATH

Also runnable by hand with every option of `python -m deploybench measure --help`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploybench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["measure", *sys.argv[1:]]))
