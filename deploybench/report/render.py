"""Render the report: sections of tables, figures and findings -> report.html, report.tex (+ PDF).

`build_report(df, config)` assembles the sections from the frame and the typed WorkflowConfig (plain
data, shared by both templates); `render_report(...)` writes the files. The HTML is one self-contained
file (inline SVG and CSS, no script, a Content-Security-Policy that forbids every network load). The
LaTeX uses booktabs tables and includes each figure as a vector PDF from `figures/`; it is compiled with
pdflatex when pdflatex is on PATH, and the reason is recorded when it is not (or when it fails).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from functools import partial
from pathlib import Path

import jinja2
import pandas as pd

from deploybench.enums import StudyKind
from deploybench.plan.config import WorkflowConfig
from deploybench.report import (
    appendix,
    builder,
    captions,
    findings,
    imported,
    kernels,
    latex,
    plot,
    serving,
    serving_figures,
    specs,
    trust,
)
from deploybench.report.data import ReportData
from deploybench.report.figures import build_figures
from deploybench.report.fmt import short
from deploybench.report.model import skipped_table

DEFAULT_TITLE = "deploybench report"
HTML_JINJA = {"autoescape": True, "undefined": jinja2.StrictUndefined, "trim_blocks": True, "lstrip_blocks": True}
FIGURE_FILES = ("svg", "pdf", "tex")  # .tex: the pgfplots figures of earlier versions, removed on sight

# Every table, by id: the study tables from their specs, then the others.
TABLES = {spec.id: partial(builder.build, spec) for spec in specs.SPECS}
TABLES |= {"table-study-figures": imported.figures, "table-tpot-check": imported.tpot_check}
TABLES |= {"table-study-derived": imported.derived}
TABLES |= {"table-governance": appendix.governance, "table-methodology": appendix.methodology}
TABLES |= {"table-definitions": appendix.definitions, "table-environment": appendix.environment}
TABLES |= {"table-failures": appendix.failures, "table-trust": trust.tables}
TABLES |= {"table-serving-slo": serving.slo_table, "table-serving-generate": serving.table12}
TABLES |= {kernels.TID: kernels.tables}
# Sections in reading order, each with its tables and figures: captions.yaml's `sections` (with titles, intros).


def _tables(tid: str, data: ReportData) -> list:
    try:
        return TABLES[tid](data)
    except Exception as exc:  # one broken table must not take the report down
        title = tid.removeprefix("table-").capitalize()
        return [skipped_table(tid, title, f"could not be built: {short(repr(exc), 200)}")]


def _figure_item(fig) -> dict:
    item = {"type": "figure", "id": fig.id, "obj": fig, "number": None, "svg": "", "pdf": None}
    if not fig.skipped and plot.matplotlib is None:
        fig.skipped = f"not drawn: {plot.MISSING}"
    if not fig.skipped:
        item["svg"], item["pdf"] = plot.render(fig)
        item["tex_width"] = f"{plot.tex_width(fig):.2f}"
    return item


def build_report(df: pd.DataFrame | None, config: WorkflowConfig | None, templates_dir: Path | None = None) -> dict:
    """Everything the templates print, as plain data."""
    captions.use(templates_dir)
    data = ReportData(df, config)
    figs = build_figures(data) | serving_figures.build_figures(data)
    sections, counts = [], {"table": 0, "figure": 0}
    for sid, text in captions.entries("sections").items():
        if text.get("needs") and not data.studies(StudyKind(text["needs"])):
            continue  # a section of a study kind the config lacks (serving engines) is left out
        items = []
        for item_id in text["items"]:
            if item_id.startswith("fig-"):
                items.append(_figure_item(figs[item_id]))
            else:
                items += [{"type": "table", "id": t.id, "obj": t, "number": None} for t in _tables(item_id, data)]
        for item in items:
            if not item["obj"].skipped:
                counts[item["type"]] += 1
                item["number"] = counts[item["type"]]
        notes = imported.notes(data) if sid == "sec-tpot" else []
        intro, appended = " ".join(text["intro"].split()), bool(text.get("appendix"))
        section = {"id": sid, "title": text["title"], "intro": intro, "items": items, "notes": notes}
        sections.append(section | {"appendix": appended})
    return {
        "title": str(data.title or DEFAULT_TITLE),
        "generated_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": findings.summary(data),
        "findings": findings.findings(data),
        "headline": findings.headline(data),
        "sections": sections,
        "figures": figs,
        "data": data,
    }


def _items(ctx: dict, kind: str) -> list[dict]:
    return [it for s in ctx["sections"] for it in s["items"] if it["type"] == kind]


def manifest(ctx: dict, pdf_status: str) -> dict:
    """What the report holds, for tests and benchmarks/compare_report_structure.py."""

    def entry(it, size):
        return {"title": it["obj"].title, "number": it["number"], "skipped": it["obj"].skipped} | size

    return {
        "title": ctx["title"],
        "generated_at": ctx["generated_at"],
        "pdf_status": pdf_status,
        "tables": {it["id"]: entry(it, {"rows": len(it["obj"].rows)}) for it in _items(ctx, "table")},
        "figures": {it["id"]: entry(it, {"panels": len(it["obj"].panels)}) for it in _items(ctx, "figure")},
        "sections": [s["id"] for s in ctx["sections"]],
        "findings": [f.text for f in ctx["findings"]],
        "missing": ctx["summary"]["missing"],
        "table_data": {it["id"]: dataclasses.asdict(it["obj"]) for it in _items(ctx, "table")},
    }


def _write_figures(ctx: dict, fig_dir: Path) -> None:
    fig_dir.mkdir(exist_ok=True)
    for it in _items(ctx, "figure"):
        written = {"svg": it["svg"].encode("utf-8"), "pdf": it["pdf"]} if it["pdf"] else {}
        for ext in FIGURE_FILES:
            path = fig_dir / f"{it['id']}.{ext}"
            if ext in written:
                path.write_bytes(written[ext])
            elif path.exists():
                path.unlink()  # a figure skipped now must not linger from an earlier run


def render_report(
    ape_df: pd.DataFrame | None, config: WorkflowConfig | None, out_dir: Path, templates_dir: Path, pdf: bool = True
) -> dict:
    """Write report.html, report.tex, figures/ and manifest.json (+ report.pdf); returns their paths.

    The returned dict also holds `pdf_status` (built, or why not). `pdf=False` skips pdflatex.
    """
    out_dir, templates_dir = Path(out_dir), Path(templates_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = build_report(ape_df, config, templates_dir)
    paths = {k: out_dir / name for k, name in (("html", "report.html"), ("tex", "report.tex"))}
    paths |= {"figures": out_dir / "figures", "manifest": out_dir / "manifest.json"}
    _write_figures(ctx, paths["figures"])
    html_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)), **HTML_JINJA)
    paths["html"].write_text(html_env.get_template("report.html.j2").render(**ctx), encoding="utf-8")
    tex = latex.environment(templates_dir).get_template("report.tex.j2").render(**ctx)
    paths["tex"].write_text(tex, encoding="utf-8")
    pdf_path, status = latex.compile_pdf(paths["tex"]) if pdf else (None, "not built: skipped by the caller")
    if pdf_path is None and (out_dir / "report.pdf").exists():
        (out_dir / "report.pdf").unlink()  # never leave a stale PDF beside a new .tex
    text = json.dumps(manifest(ctx, status), indent=1, ensure_ascii=False, allow_nan=False, default=str)
    paths["manifest"].write_text(text, encoding="utf-8")
    return paths | {"pdf": pdf_path, "pdf_status": status}
