"""Rule adapter: results/ape.parquet + config -> report/report.html, report.tex (+ figures/, report.pdf).

Under Snakemake (`script:`): input[0] is the APE table; params.config the validated config as JSON
(common.smk's WorkflowConfig, the keys the config file gives), validated here once more into the typed
config the report reads; params.templates_dir the Jinja templates; output.html / output.tex (and
output.pdf, if the rule declares it) the files.
The PDF is built when pdflatex is on PATH; when the rule declares output.pdf and none could be
built, the job fails with the reason instead of leaving a stale or missing file unexplained.

Standalone, for debugging (later config files laid over earlier ones, as Snakemake's --configfile does):
    python scripts/report.py --input results/ape.parquet --config config.yaml [overlay.yaml ...] --out report
The synthetic frame the report tests use lives in tests/fixtures/report_demo.py (test data, not
part of the workflow).
"""

import argparse
import contextlib
import json
import shutil
from pathlib import Path

import pandas as pd

from deploybench.plan.config import WorkflowConfig, load_config, validate_config
from deploybench.report import render_report

ROOT = Path(__file__).resolve().parents[1]


def run(
    input_path, config: WorkflowConfig, out_dir, templates_dir, pdf: bool = True, require_pdf: bool = False
) -> dict:
    df = pd.read_parquet(input_path)
    paths = render_report(df, config, Path(out_dir), Path(templates_dir), pdf=pdf)
    print(f"report: {len(df)} rows -> {paths['html']}, {paths['tex']}; PDF {paths['pdf_status']}")
    if require_pdf and paths["pdf"] is None:
        raise SystemExit(f"report.pdf was requested but {paths['pdf_status']}")
    return paths


def _place(src: Path, dst) -> None:
    """Move a rendered file to the path the rule declared, when it differs from report/<name>."""
    dst = Path(dst)
    if src.resolve() != dst.resolve():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def _snakemake(smk) -> None:
    log = smk.log[0] if len(smk.log) else None
    with open(log or "/dev/null", "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        out_dir = Path(smk.output.html).parent
        templates = smk.params.get("templates_dir", ROOT / "workflow" / "templates")
        outputs = dict(smk.output.items())
        pdf = bool(smk.params.get("pdf", True))  # params: pdf=False skips pdflatex
        config = validate_config(json.loads(smk.params.config))
        paths = run(smk.input[0], config, out_dir, templates, pdf=pdf, require_pdf="pdf" in outputs)
        for key in ("html", "tex", "pdf"):
            if key in outputs and paths.get(key) is not None:
                _place(paths[key], outputs[key])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, required=True, help="results/ape.parquet (the APE table)")
    ap.add_argument("--config", type=Path, nargs="+", required=True, help="the workflow config (YAML), overlays after")
    ap.add_argument("--out", type=Path, default=ROOT / "report", help="output folder (default: report/)")
    ap.add_argument("--templates", type=Path, default=ROOT / "workflow" / "templates")
    ap.add_argument("--no-pdf", action="store_true", help="skip pdflatex")
    args = ap.parse_args(argv)
    run(args.input, load_config(*args.config), args.out, args.templates, pdf=not args.no_pdf)


if "snakemake" in globals():
    _snakemake(globals()["snakemake"])
elif __name__ == "__main__":
    main()
