"""Command line: measure one cell standalone or from the workflow's params; print the config schema.

    python -m deploybench measure --architecture workflow/architectures/tiny-qwen3.json \
        --context 128 --gen 16 --decoding greedy --dtype bfloat16 --out /tmp/cell.parquet
    python -m deploybench measure --cell-json '{"model_name": ...}' --out results/cells/....parquet
    python -m deploybench config-schema > workflow/schemas/config.schema.json

torch is imported only after the GPU lease has set CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from deploybench import HARNESS_VERSION
from deploybench.enums import Backend, DType, ExpertsImplementation, WeightsSource, values
from deploybench.plan.spec import STANDARD_DECODING, CellSpec, SpecError, card_digests, parse_cell, parse_job


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploybench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("config-schema", help="print the JSON schema of the workflow config (generated from its models)")
    c = sub.add_parser(
        "check-config",
        help="check config files as Snakemake would merge them (config.yaml first, then --configfile overlays), "
        "naming file and line of a YAML error (Snakemake's own message for an overlay names neither)",
    )
    c.add_argument("files", nargs="+", help="config.yaml, then the overlays in command-line order")
    m = sub.add_parser("measure", help="measure one cell and write its Parquet row")
    m.add_argument("--cell-json", help="the full cell spec as JSON")
    m.add_argument("--spec-json", help='what the workflow passes: {"cell": <cell spec>, "harness_version": ...}')
    src = m.add_mutually_exclusive_group()
    src.add_argument("--architecture", help="architecture card (random weights)")
    src.add_argument("--pretrained", help="hub id or local directory (pretrained weights)")
    m.add_argument("--name", help="model name in the row (default: the card or directory name)")
    m.add_argument("--revision")
    m.add_argument("--trust-remote-code", action="store_true")
    m.add_argument("--experts-implementation", help=f"one of {values(ExpertsImplementation)}")
    m.add_argument("--context", type=int)
    m.add_argument("--gen", type=int)
    m.add_argument(
        "--decoding",
        default="greedy",
        help=f"one of {sorted(STANDARD_DECODING)} or a JSON object",
    )
    m.add_argument("--dtype", default=DType.BFLOAT16, help=f"one of {values(DType)}")
    m.add_argument("--backend", default=Backend.EAGER, help=f"one of {values(Backend)}")
    m.add_argument("--measurement-json", default="{}", help="overrides of the measurement settings")
    m.add_argument("--out", required=True, help="output Parquet path")
    m.add_argument(
        "--archive-dir",
        default="results/archive",
        help="every finished row is also kept here, so a later failed rerun of the cell loses nothing ('' to skip)",
    )
    return parser


def cell_from_args(args) -> CellSpec:
    """The validated cell spec the arguments describe; SpecError names the bad field."""
    if args.spec_json:
        return parse_job(args.spec_json, HARNESS_VERSION)
    if args.cell_json:
        return parse_cell(args.cell_json)
    if not (args.architecture or args.pretrained):
        raise SpecError("model: give --architecture, --pretrained or --cell-json")
    for field in ("context", "gen"):
        if getattr(args, field) is None:
            raise SpecError(f"{field}: required")
    if args.architecture:
        model = {"source": WeightsSource.RANDOM, "architecture": args.architecture}
        name = args.name or Path(args.architecture).stem
    else:
        model = {
            "source": WeightsSource.PRETRAINED,
            "id": args.pretrained,
            "trust_remote_code": args.trust_remote_code,
        }
        if args.revision:
            model["revision"] = args.revision
        name = args.name or Path(args.pretrained).name
    if args.experts_implementation:
        model["experts_implementation"] = args.experts_implementation
    if args.decoding in STANDARD_DECODING:
        decoding_name, decoding = args.decoding, STANDARD_DECODING[args.decoding]
    else:
        try:
            decoding = json.loads(args.decoding)
        except json.JSONDecodeError:
            raise SpecError(f"decoding: {args.decoding!r} is neither {sorted(STANDARD_DECODING)} nor JSON") from None
        decoding_name = "custom"
    cell = parse_cell(
        {
            "model_name": name,
            "model": model,
            "decoding_name": decoding_name,
            "decoding": decoding,
            "measurement": json.loads(args.measurement_json),
            "context": args.context,
            "gen": args.gen,
            "dtype": args.dtype,
            "backend": args.backend,
        }
    )
    return cell.model_copy(update={"card_sha256": card_digests(cell.model)})


def check_config(files: list[str]) -> int:
    """Each file read strictly (file and line of a YAML error), the overlays checked, the merge validated."""
    from deploybench.plan.config import ConfigError, all_cells, check_duplicate_keys, load_config
    from deploybench.plan.config_files import check_overlays, load_yaml_file

    try:
        for path in files:
            load_yaml_file(path)
            check_duplicate_keys(path)
        check_overlays(files[:1], files[1:])
        config = load_config(*files)
        cells = all_cells(config)
    except ConfigError as exc:
        print(f"deploybench: {exc}", file=sys.stderr)
        return 1
    from deploybench.plan.serving import serve_groups

    groups = serve_groups(config)
    serving = (
        f" + {sum(map(len, groups.values()))} serving load points in {len(groups)} server groups" if groups else ""
    )
    print(f"{' + '.join(files)}: valid, {len(cells)} cells{serving}")
    return 0


def print_config_schema() -> int:
    from deploybench.plan.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return 0


def after_killed(argv: list[str], code: int) -> int:
    """The job's exit status once the process measuring `argv` died without a word (killed by a signal, e.g.
    the kernel's out-of-memory killer): as after any failed attempt, the cell keeps its last good row (0),
    else the job fails (`code`). Called by the warm server's client (scripts/measure_cell.py)."""
    import signal

    args = _parser().parse_args(argv)
    if code >= 0 or args.command != "measure" or not args.archive_dir:
        return code
    try:
        cell = cell_from_args(args)
    except (SpecError, json.JSONDecodeError):
        return code
    from deploybench.results import archive
    from deploybench.results.schema import write_row

    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    why = f"the measuring process was killed by {name}" + (
        " (the out-of-memory killer sends it)" if name == "SIGKILL" else ""
    )
    row = archive.after_attempt(archive.crash_row(cell, why, archive.utc_now()), args.archive_dir)
    if not row.get("superseded_by_failure"):
        return code
    write_row(row, args.out)
    print(f"deploybench: {why}; {cell.cell_id} keeps its last good row, marked superseded", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config-schema":
        return print_config_schema()
    if args.command == "check-config":
        return check_config(args.files)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cell = cell_from_args(args)
    except (SpecError, json.JSONDecodeError) as exc:
        print(f"deploybench: invalid cell spec: {exc}", file=sys.stderr)
        return 2

    from deploybench.results import archive
    from deploybench.results.schema import write_row

    started_at = archive.utc_now()
    if args.archive_dir:
        good = archive.restorable(args.archive_dir, cell)
        if good is not None:  # the setting was reverted after a failed attempt: nothing to measure
            archive.restore(good, args.out, args.archive_dir)
            logging.info(
                "%s: restored the last good row (measured %s); nothing measured", cell.cell_id, good["started_at"]
            )
            return 0
    from deploybench.measure.gpu_lease import lease_gpu

    try:
        with lease_gpu() as lease:
            logging.info("GPU lease: %s", lease)
            from deploybench.measure.phases import measure_cell

            row = measure_cell(cell)
    except Exception as exc:
        if not args.archive_dir:
            raise
        row = archive.after_attempt(
            archive.crash_row(cell, f"{type(exc).__name__}: {exc}", started_at), args.archive_dir
        )
        if not row.get("superseded_by_failure"):
            raise  # no good row to keep: the job fails, as any unexpected error does
        logging.exception("%s: the attempt failed; the cell keeps its last good row, marked superseded", cell.cell_id)
    else:
        if args.archive_dir:
            row = archive.after_attempt(row, args.archive_dir)
    write_row(row, args.out)
    logging.info(
        "%s: status=%s valid=%s ttft_ms=%s decode_tps=%s e2e_tps=%s",
        row["cell_id"],
        row["status"],
        row.get("valid"),
        row.get("ttft_ms"),
        row.get("decode_tps"),
        row.get("e2e_tps"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
