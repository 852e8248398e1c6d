"""Render the report: tables, figures and findings -> report.html, report.tex (+ figures/, PDF).

`build_report(df, config)` assembles the sections (pure data, shared by both templates);
`render_report(...)` writes the files. The HTML is one self-contained file (inline SVG and CSS,
no script, a Content-Security-Policy that forbids every network load). The LaTeX uses booktabs
tables and pgfplots figures written to `figures/*.tex`; it is compiled with pdflatex when
pdflatex is on PATH, and the reason is recorded when it is not (or when it fails).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import jinja2
import pandas as pd

from deploybench.report import figures as F
from deploybench.report import findings as FN
from deploybench.report import tables as T

DEFAULT_TITLE = "deploybench report"

SECTIONS = [
    # id, title, intro for a newcomer, items (table builders and figure ids, in reading order)
    (
        "sec-latency",
        "Latency and throughput",
        "How fast each model answers one request (batch 1): the time to the first token (TTFT) and the tokens per "
        "second that follow, at the reference cell and as the prompt grows. End-to-end tok/s counts the prefill; "
        "decode tok/s does not.",
        [T.latency_reference, "fig-tps-context", T.tps_vs_context, "fig-ttft-context", T.ttft_vs_context, T.tps_change],
    ),
    (
        "sec-memory",
        "Memory",
        "How much GPU memory each model holds at its peak while decoding, with the KV cache alive, and what it is "
        "made of.",
        [T.memory_reference, "fig-memory"],
    ),
    (
        "sec-energy",
        "Energy",
        "How much GPU energy a generated token costs, read from the GPU's own energy counter over a window of "
        "repeated runs.",
        [T.energy_reference, "fig-energy-context", T.energy_vs_context],
    ),
    (
        "sec-ape",
        "Active Parameter Efficiency (APE)",
        "A mixture-of-experts model multiplies only some of its weights per token. APE divides each figure by the "
        "parameters a token actually uses (in billions), which puts sparse and dense models on one scale.",
        [T.ape_reference, "fig-ape"],
    ),
    (
        "sec-decode",
        "Inter-token latency and the bandwidth bound",
        "How evenly tokens arrive once decoding has started, and how close decoding comes to the memory-bandwidth "
        "limit.",
        ["fig-itl", "fig-roofline"],
    ),
    (
        "sec-ablations",
        "Ablations",
        "One setting varied at a time, the rest held at the study's values: decoding mode, context length, precision, "
        "serving backend and experts implementation.",
        [T.decoding_ablation, T.context_scaling, T.precision_sweep, T.backend_comparison, T.experts_comparison],
    ),
    (
        "sec-governance",
        "Governance",
        "Licence and usage terms of each model, as stated in the config's metadata.",
        [T.governance],
    ),
    (
        "sec-comparison",
        "Comparison with the study's published figures",
        "The figures released with arXiv 2508.16700 (or any other imported table) beside ours at the same cells, and "
        "the check that corrects the study's tok/s figures where they are an artifact of TTFT.",
        [T.imported_comparison, T.imported_tpot],
    ),
    (
        "sec-methodology",
        "Methodology",
        "How every figure above was produced.",
        [T.methodology],
    ),
    (
        "sec-definitions",
        "Metric definitions",
        "What each column means, its unit, and what other tools call the same quantity.",
        [T.definitions],
    ),
    (
        "sec-environment",
        "Environment",
        "Every distinct machine and software stack found in the data.",
        [T.environment],
    ),
    (
        "sec-failures",
        "Failures and invalid cells",
        "Cells that failed (an expected failure recorded as a result) or did not pass a validity check, with the "
        "reason.",
        [T.failures],
    ),
]


def build_report(df: pd.DataFrame | None, config: dict | None) -> dict:
    """Everything the templates print, as plain data."""
    config = config or {}
    data = T.ReportData(df, config)
    figs = F.build_figures(data)
    sections, n_table, n_fig = [], 0, 0
    for sid, title, intro, items in SECTIONS:
        out = []
        for item in items:
            if isinstance(item, str):
                fig = figs[item]
                number = None
                if not fig.skipped:
                    n_fig += 1
                    number = n_fig
                out.append(
                    {
                        "type": "figure",
                        "id": fig.id,
                        "obj": fig,
                        "number": number,
                        "svg": F.to_svg(fig),
                        "pgf": f"figures/{fig.id}.tex",
                    }
                )
            else:
                try:
                    tables = item(data)
                except Exception as exc:  # one broken table must not take the report down
                    name = item.__name__.replace("_", "-")
                    tables = [
                        T.skipped_table(
                            f"table-{name}",
                            name.replace("-", " ").capitalize(),
                            f"could not be built: {T.short(repr(exc), 200)}",
                        )
                    ]
                for t in tables:
                    number = None
                    if not t.skipped:
                        n_table += 1
                        number = n_table
                    out.append({"type": "table", "id": t.id, "obj": t, "number": number})
        notes = T.imported_notes(data) if sid == "sec-comparison" else []
        sections.append({"id": sid, "title": title, "intro": intro, "items": out, "notes": notes})
    report_cfg = config.get("report") or {}
    return {
        "title": str(report_cfg.get("title") or DEFAULT_TITLE),
        "generated_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": FN.summary(data),
        "findings": FN.findings(data),
        "sections": sections,
        "figures": figs,
        "data": data,
    }


# --------------------------------------------------------------------------------------------
# LaTeX helpers exposed to the template
# --------------------------------------------------------------------------------------------


def tex_colspec(table: T.Table) -> str:
    specs = []
    for c in table.columns:
        if c.wrap:
            w = c.width or 0.22
            specs.append(f">{{\\raggedright\\arraybackslash}}p{{{w:.3f}\\linewidth}}")
        else:
            specs.append("r" if c.align == "r" else "l")
    return "".join(specs)


def _lines(text: str, width: int) -> list[str]:
    """Greedy word wrap: narrow headers keep wide tables from shrinking to an unreadable size."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def tex_header(col: T.Column) -> str:
    parts = _lines(col.label, 14)
    second = " ".join(x for x in ((f"({col.unit})" if col.unit else ""), col.arrow) if x)
    if second:
        parts += _lines(second, 16)
    parts = [F.tex_escape(p) for p in parts]
    if len(parts) == 1:
        return parts[0]
    align = "r" if col.align == "r" and not col.wrap else "l"
    return f"\\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}" + "\\\\".join(parts) + "\\end{tabular}"


def tex_cell(cell: T.Cell, col: T.Column) -> str:
    text = F.tex_escape(cell.text)
    if cell.kind == "failed":
        return f"\\textcolor{{failed}}{{{text}}}"
    if cell.kind == "missing":
        return f"\\textcolor{{gray}}{{{text}}}"
    if cell.kind == "baseline":
        return f"\\textit{{{text}}}"
    if cell.href and not col.wrap:
        return text
    return text


def tex_url(url: str) -> str:
    return "\\url{" + re.sub(r"([%#{}\\])", r"\\\1", str(url)) + "}"


def _tex_env(templates_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        block_start_string=r"\BLOCK{",
        block_end_string="}",
        variable_start_string=r"\VAR{",
        variable_end_string="}",
        comment_start_string=r"\#{",
        comment_end_string="}",
        line_comment_prefix="%#",
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["tex"] = F.tex_escape
    env.filters["tex_url"] = tex_url
    env.globals.update(tex_colspec=tex_colspec, tex_header=tex_header, tex_cell=tex_cell)
    return env


def _html_env(templates_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


# --------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------


def compile_pdf(tex_path: Path, timeout_s: int = 240) -> tuple[Path | None, str]:
    """pdflatex twice (cross-references) in a scratch folder; returns (pdf or None, what happened)."""
    exe = shutil.which("pdflatex")
    if exe is None:
        return None, "not built: pdflatex is not on PATH (install texlive: .ci/setup_report_tools.sh)"
    tex_path = Path(tex_path).resolve()
    out_pdf = tex_path.with_suffix(".pdf")
    log_copy = tex_path.with_suffix(".latex.log")
    with tempfile.TemporaryDirectory(prefix="report-latex-") as build:
        cmd = [
            exe,
            "-interaction=nonstopmode",
            "-halt-on-error",
            "-file-line-error",
            f"-output-directory={build}",
            tex_path.name,
        ]
        env = {**os.environ, "max_print_line": "1000"}
        for _ in range(2):
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=tex_path.parent,
                    capture_output=True,
                    text=True,
                    timeout=timeout_s,
                    env=env,
                    errors="replace",
                )
            except subprocess.TimeoutExpired:
                return None, f"not built: pdflatex ran over {timeout_s} s"
            log = Path(build, tex_path.with_suffix(".log").name)
            if log.exists():
                shutil.copyfile(log, log_copy)
            if proc.returncode != 0:
                errors = [
                    ln
                    for ln in (proc.stdout or "").splitlines()
                    if ln.startswith("!") or ":" in ln and "error" in ln.lower()
                ]
                return None, f"not built: pdflatex failed ({'; '.join(errors[:3]) or 'see ' + log_copy.name})"
        built = Path(build, tex_path.with_suffix(".pdf").name)
        if not built.exists():
            return None, "not built: pdflatex produced no PDF"
        shutil.copyfile(built, out_pdf)
    pages = None
    if log_copy.exists():
        m = re.search(r"REPORT-PAGES: (\d+)", log_copy.read_text(errors="replace"))
        pages = int(m.group(1)) if m else None
    return out_pdf, f"built with pdflatex ({pages} pages)" if pages else "built with pdflatex"


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def render_report(
    ape_df: pd.DataFrame | None, config: dict | None, out_dir: Path, templates_dir: Path, pdf: bool = True
) -> dict:
    """Write report.html, report.tex, figures/ and manifest.json (+ report.pdf); returns their paths.

    The returned dict also holds `pdf_status` (built, or why not). `pdf=False` skips pdflatex.
    """
    out_dir, templates_dir = Path(out_dir), Path(templates_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    ctx = build_report(ape_df, config)
    for f in ctx["figures"].values():
        for ext, text in (("svg", F.to_svg(f)), ("tex", F.to_pgfplots(f))):
            path = fig_dir / f"{f.id}.{ext}"
            if text:
                path.write_text(text, encoding="utf-8")
            elif path.exists():
                path.unlink()  # a figure skipped now must not linger from an earlier run
    html = _html_env(templates_dir).get_template("report.html.j2").render(**ctx)
    tex_ctx = dict(ctx, color_defs=F.tex_color_defs(ctx["figures"].values()))
    tex = _tex_env(templates_dir).get_template("report.tex.j2").render(**tex_ctx)
    paths = {
        "html": out_dir / "report.html",
        "tex": out_dir / "report.tex",
        "figures": fig_dir,
        "manifest": out_dir / "manifest.json",
    }
    paths["html"].write_text(html, encoding="utf-8")
    paths["tex"].write_text(tex, encoding="utf-8")
    pdf_path, status = (None, "not built: skipped by the caller") if not pdf else compile_pdf(paths["tex"])
    if pdf_path is None and (out_dir / "report.pdf").exists():
        (out_dir / "report.pdf").unlink()  # never leave a stale PDF beside a new .tex
    paths["pdf"] = pdf_path
    manifest = {
        "title": ctx["title"],
        "generated_at": ctx["generated_at"],
        "pdf_status": status,
        "tables": {
            it["id"]: {
                "title": it["obj"].title,
                "number": it["number"],
                "skipped": it["obj"].skipped,
                "rows": len(it["obj"].rows),
            }
            for s in ctx["sections"]
            for it in s["items"]
            if it["type"] == "table"
        },
        "figures": {
            it["id"]: {
                "title": it["obj"].title,
                "number": it["number"],
                "skipped": it["obj"].skipped,
                "panels": len(it["obj"].panels),
            }
            for s in ctx["sections"]
            for it in s["items"]
            if it["type"] == "figure"
        },
        "sections": [s["id"] for s in ctx["sections"]],
        "findings": [f.text for f in ctx["findings"]],
        "missing": ctx["summary"]["missing"],
        "table_data": {
            it["id"]: _jsonable(it["obj"]) for s in ctx["sections"] for it in s["items"] if it["type"] == "table"
        },
    }
    paths["manifest"].write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False, allow_nan=False, default=str), encoding="utf-8"
    )
    paths["pdf_status"] = status
    return paths
