"""Adapter the serve rule calls: measure a server group's load points (one server) and write its marker.

    python scripts/serve_group.py --job-json '{"points": [...], "harness_version": "3", ...}' --marker PATH

Each load point's row goes to its own cell file (results/cells/...-cc16.parquet); the marker lists them.
"""

import argparse
import logging
import sys

from deploybench import HARNESS_VERSION
from deploybench.plan.serving import parse_serve_job
from deploybench.plan.spec import SpecError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--job-json", required=True, help="the serve rule's params: every load point's cell spec")
    parser.add_argument("--marker", required=True, help="the group's marker (JSON), written last")
    parser.add_argument("--archive-dir", default="results/archive", help="every row is also kept here ('' to skip)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    try:
        job = parse_serve_job(args.job_json, HARNESS_VERSION)
    except SpecError as exc:
        print(f"deploybench: invalid serve job: {exc}", file=sys.stderr)
        return 2
    from deploybench.measure.serve_group import run

    content = run(job, args.marker, args.archive_dir or None)
    logging.info(
        "%s: measured %d, kept %d, restored %d; server started %d time(s)",
        content["group"],
        len(content["measured"]),
        len(content["kept"]),
        len(content["restored"]),
        content["server_starts"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
