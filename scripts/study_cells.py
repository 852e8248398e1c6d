"""The result files of some studies of a config: the Snakemake targets that run those studies alone.

    python scripts/study_cells.py config/full-size.yaml main backends    # one path per line
    python scripts/study_cells.py config/full-size.yaml --list           # the config's studies and their sizes
    python scripts/study_cells.py config/full-size.yaml main --config-out sitting.yaml
    python scripts/study_cells.py config/full-size.yaml batch:gpt-oss-20b --config-out sitting.yaml

A study that does not fit one GPU sitting is run as its cells' files, on one machine, from the full config,
so every cell keeps the config's settings and the report later reads all studies together. --config-out writes
the config with only the named studies (every other key as it was), so a sitting's report renders from its own
cells: each cell's params, and so its path and Snakemake's rerun check, are the same under either config.
STUDY:MODEL[+MODEL...] cuts a study to some of its models, for a study too long for one sitting (the batch study:
one model per sitting, each on its own machine).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

from deploybench.plan.config import cells_by_study, check_duplicate_keys, validate_config


def cut(raw: dict, selectors: list[str]) -> tuple[dict, list[str]]:
    """The raw config with only the selected studies, each cut to its selected models; or the errors, each
    naming the selector at fault."""
    studies, errors = {}, []
    for selector in selectors:
        name, _, models = selector.partition(":")
        study = raw.get("studies", {}).get(name)
        if study is None:
            errors.append(f"{selector}: unknown study {name!r}; the config has {sorted(raw.get('studies', {}))}")
            continue
        study = copy.deepcopy(study)
        if models:
            chosen = models.split("+")
            if stray := [m for m in chosen if m not in study.get("models", [])]:
                errors.append(f"{selector}: {stray} not among studies.{name}.models {study.get('models')}")
                continue
            study["models"] = [m for m in study["models"] if m in chosen]  # the config's order
        if name in studies:
            errors.append(f"{selector}: study {name!r} selected twice")
            continue
        studies[name] = study
    return {**raw, "studies": studies}, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("studies", nargs="*", help="STUDY or STUDY:MODEL[+MODEL...]")
    parser.add_argument("--list", action="store_true", help="each study with its number of cells")
    parser.add_argument("--config-out", type=Path, help="write the config cut to the named studies here")
    args = parser.parse_args(argv)
    check_duplicate_keys(args.config)
    raw = yaml.safe_load(Path(args.config).read_text())
    if args.list or not args.studies:
        for name, paths in cells_by_study(validate_config(raw)).items():
            print(f"{name}\t{len(paths)}")
        return 0
    sitting, errors = cut(raw, args.studies)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    by_study = cells_by_study(validate_config(sitting))
    if args.config_out:
        args.config_out.write_text(
            f"# {args.config} cut to {' '.join(args.studies)} (scripts/study_cells.py --config-out)\n"
            + yaml.safe_dump(sitting, sort_keys=False, allow_unicode=True)
        )
    for path in sorted({path for paths in by_study.values() for path in paths}):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
