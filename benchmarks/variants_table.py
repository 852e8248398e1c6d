"""compiled_loop_variants.py's reports as one Markdown table: per model and variant, decode speed, its ratio to the
baseline, both roofline fractions, whether its logits match the baseline's and by how much, or its error.

    python benchmarks/variants_table.py variants_gpt-oss-20b.json variants_qwen3-32b.json.gz [...]

The fastest variant whose logits match (the summary's `fastest_matching`, the candidate default) is in bold.
Reports written before the logit check (no `logits_match_baseline`) print a dash there and mark nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from compiled_loop_variants import BASELINE, summary

from deploybench.report.fmt import DASH, fmt_num, fmt_ratio, short

HEADER = (
    "model",
    "variant",
    "decode tok/s",
    "vs baseline",
    "copy / GEMV roofline",
    "logits match",
    "max logit diff (baseline's gap)",
    "machine",
)


def load(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return json.load(fh)


def rows(report: dict) -> list[tuple[str, ...]]:
    model = Path(report["architecture"]).stem
    machine = f"`{(report['environment'].get('device_uuid') or report['environment'].get('device') or '')[:12]}`"
    baseline = report["variants"].get(BASELINE, {})
    fastest = summary(report)["fastest_matching"]
    judged = any("logits_match_baseline" in v for v in report["variants"].values())
    out = []
    for name, result in report["variants"].items():
        if "error" in result:
            out.append((model, name, f"error: {short(result['error'], 60)}", DASH, DASH, DASH, DASH, machine))
            continue
        if name == BASELINE:
            match_text, diff = "(itself)", f"({fmt_num(baseline.get('stock_logit_gap'), 3)})"
        else:
            match = result.get("logits_match_baseline")
            match_text = DASH if match is None else ("yes" if match else "no")
            diff = fmt_num(result.get("max_abs_logit_diff_vs_baseline"), 3)
        roofline = f"{fmt_num(result.get('roofline_fraction'), 2)} / {fmt_num(result.get('roofline_fraction_gemv'), 2)}"
        speedup = DASH if name == BASELINE else fmt_ratio(result.get("decode_speedup_vs_baseline"))
        tps = fmt_num(result["decode_tps"], 4)
        bold = judged and name == fastest
        cells = (model, name, tps, speedup, roofline, match_text, diff, machine)
        out.append(tuple(f"**{c}**" if bold and i in (1, 2) else c for i, c in enumerate(cells)))
    return out


def markdown(reports: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(row) + " |" for report in reports for row in rows(report)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(markdown([load(path) for path in args.reports]))


if __name__ == "__main__":
    main()
