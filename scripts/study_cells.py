"""The result files of some studies of a config: the Snakemake targets that run those studies alone.

    python scripts/study_cells.py config/full-size.yaml main backends    # one path per line
    python scripts/study_cells.py config/full-size.yaml --list           # the config's studies and their sizes
    python scripts/study_cells.py config/full-size.yaml main --config-out sitting.yaml

A study that does not fit one GPU sitting is run as its cells' files, on one machine, from the full config,
so every cell keeps the config's settings and the report later reads all studies together. --config-out writes
the config with only the named studies (every other key as it was), so a sitting's report renders from its own
cells: each cell's params, and so its path and Snakemake's rerun check, are the same under either config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from deploybench.plan.config import cells_by_study, load_config, validate_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("studies", nargs="*")
    parser.add_argument("--list", action="store_true", help="each study with its number of cells")
    parser.add_argument("--config-out", type=Path, help="write the config cut to the named studies here")
    args = parser.parse_args(argv)
    by_study = cells_by_study(load_config(args.config))
    if args.list or not args.studies:
        for name, paths in by_study.items():
            print(f"{name}\t{len(paths)}")
        return 0
    unknown = [name for name in args.studies if name not in by_study]
    if unknown:
        print(f"unknown studies {unknown}; the config has {sorted(by_study)}", file=sys.stderr)
        return 2
    if args.config_out:
        raw = yaml.safe_load(Path(args.config).read_text())
        raw["studies"] = {name: raw["studies"][name] for name in args.studies}
        validate_config(raw)
        args.config_out.write_text(
            f"# {args.config} cut to the studies {', '.join(args.studies)} (scripts/study_cells.py --config-out)\n"
            + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
        )
    for path in sorted({path for name in args.studies for path in by_study[name]}):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
