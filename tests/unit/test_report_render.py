"""Rendering: HTML (well-formed, self-contained) and LaTeX (booktabs, PDF figures) from a synthetic frame.

No browser and no pdflatex here: tests/report/ has those (markers `browser` and `latex`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from deploybench.report.latex import tex_escape
from deploybench.report.render import render_report
from tests.fixtures.report_demo import demo_config, demo_frame, demo_settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "workflow" / "templates"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
BLOCK = {
    "div",
    "ul",
    "ol",
    "table",
    "figure",
    "section",
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "nav",
    "header",
    "footer",
    "main",
}
LOADERS = {"script", "link", "img", "iframe", "source", "embed", "object", "audio", "video", "image", "use"}


class HTMLCheck(HTMLParser):
    """Well-formedness the browser will not fix silently: nesting, ids, no loads from anywhere."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: Counter = Counter()
        self.doctype = None
        self.meta: list[dict] = []
        self.text: list[str] = []

    def handle_decl(self, decl):
        self.doctype = decl

    def _attrs(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] += 1
        if tag == "meta":
            self.meta.append(a)
        if tag == "script":
            self.errors.append("a <script> element")
        if tag in LOADERS:
            for k in ("src", "href", "xlink:href", "srcset"):
                if k in a and not str(a[k]).startswith(("data:", "#")):
                    self.errors.append(f"<{tag} {k}={a[k]!r}> loads a resource")
        if "style" in a and "url(" in a["style"]:
            self.errors.append(f"style url() on <{tag}>")

    def handle_starttag(self, tag, attrs):
        self._attrs(tag, attrs)
        if tag in BLOCK and "p" in self.stack:
            self.errors.append(f"<{tag}> inside <p> (the browser would close the <p>)")
        if tag == "a" and "a" in self.stack:
            self.errors.append("nested <a>")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):  # <rect .../> in inline SVG
        self._attrs(tag, attrs)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] not in ("style", "title", "desc"):
            self.text.append(data)


def check_html(html: str) -> HTMLCheck:
    c = HTMLCheck()
    c.feed(html)
    c.close()
    if c.stack:
        c.errors.append(f"unclosed elements at the end: {c.stack}")
    dup = [i for i, n in c.ids.items() if n > 1]
    if dup:
        c.errors.append(f"duplicate ids: {dup[:5]}")
    return c


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = render_report(demo_frame("gpu"), demo_settings("gpu"), out, TEMPLATES, pdf=False)
    return paths, json.loads(paths["manifest"].read_text())


def test_render_writes_html_tex_and_figures(rendered):
    paths, manifest = rendered
    assert paths["html"].name == "report.html" and paths["tex"].name == "report.tex"
    assert paths["pdf"] is None and paths["pdf_status"] == "not built: skipped by the caller"
    drawn = [f for f, m in manifest["figures"].items() if not m["skipped"]]
    assert sorted(drawn) == ["fig-ape", "fig-itl", "fig-memory", "fig-ttft-context"]
    # The demo's main study decodes host-paced (eager, GPU busy 17-46%): what would compare those cells is not drawn.
    for fid in ("fig-tps-context", "fig-roofline", "fig-energy-context"):
        assert "every cell it would draw is host-paced" in manifest["figures"][fid]["skipped"], fid
    for fid in drawn:
        assert (paths["figures"] / f"{fid}.svg").read_text().startswith("<svg")
        assert (paths["figures"] / f"{fid}.pdf").read_bytes().startswith(b"%PDF")  # vector PDF for LaTeX


def test_html_is_well_formed_and_self_contained(rendered):
    paths, manifest = rendered
    html = paths["html"].read_text()
    c = check_html(html)
    assert c.errors == []
    assert c.doctype and c.doctype.lower() == "doctype html"
    assert re.search(r'<html lang="en">', html) and '<meta charset="utf-8">' in html
    csp = [m["content"] for m in c.meta if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]
    assert "http://" not in re.sub(r'<a href="https?://[^"]+"|xmlns="http://www.w3.org/2000/svg"', "", html)
    for tid in list(manifest["tables"]) + list(manifest["figures"]) + manifest["sections"]:
        assert c.ids[tid] == 1, tid
    assert html.count("<svg ") == sum(1 for m in manifest["figures"].values() if not m["skipped"])
    text = " ".join(c.text)
    assert not re.search(r"(?<![\w-])(nan|NaN|None|undefined)(?![\w-])", text)


def test_html_tables_show_units_and_direction(rendered):
    paths, _ = rendered
    html = paths["html"].read_text()
    table = html[html.index('id="table-latency-ref"') :]
    table = table[: table.index("</figure>")]
    for unit in ("(ms)", "(tok/s)", "(ms/token)"):
        assert unit in table
    assert '<span class="arrow" title="lower is better">↓</span>' in table
    assert "higher is better" in table


class TableGrid(HTMLParser):
    """Each <table> of the page: its figure's id, its header texts and its rows of cell texts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, dict] = {}
        self.figure_id, self.cell = None, None

    def handle_starttag(self, tag, attrs):
        if tag == "figure":
            self.figure_id = dict(attrs).get("id")
        elif tag == "table":
            self.tables[self.figure_id] = {"headers": [], "rows": []}
        elif tag == "tr" and self.figure_id in self.tables:
            self.tables[self.figure_id]["rows"].append([])
        elif tag in ("th", "td"):
            self.cell = [tag, ""]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self.cell is not None:
            table = self.tables[self.figure_id]
            (table["headers"] if self.cell[0] == "th" else table["rows"][-1]).append(" ".join(self.cell[1].split()))
            self.cell = None


def test_every_table_cell_sits_under_its_column(rendered):
    # The model's cells, row by row, in the model's column order, are what the page prints under each header.
    paths, manifest = rendered
    grid = TableGrid()
    grid.feed(paths["html"].read_text())
    checked = 0
    for tid, table in manifest["table_data"].items():
        if table["skipped"]:
            continue
        page = grid.tables[tid]
        keys = [c["key"] for c in table["columns"]]
        assert page["headers"][: len(keys)] and len(page["headers"]) == len(keys), tid
        assert page["headers"][0].startswith(table["columns"][0]["label"]), tid
        rows = [r for r in page["rows"] if r]  # the header row holds <th> only
        assert len(rows) == len(table["rows"]), tid
        for shown, row in zip(rows, table["rows"], strict=True):
            expected = [" ".join(row["cells"][k]["text"].split()) for k in keys]
            assert shown == expected, (tid, shown, expected)
            checked += 1
    assert checked > 100


def test_tex_uses_booktabs_and_inputs_the_figures(rendered):
    paths, manifest = rendered
    tex = paths["tex"].read_text()
    assert "\\usepackage{booktabs}" in tex and "\\hline" not in tex
    shown = [t for t, m in manifest["tables"].items() if not m["skipped"]]
    for tid in shown:
        assert f"\\label{{{tid}}}" in tex
    assert tex.count("\\toprule") >= len(shown) and tex.count("\\bottomrule") >= len(shown)
    for fid, m in manifest["figures"].items():
        included = re.search(r"\\includegraphics\[[^\]]*\]\{figures/" + re.escape(fid) + r"\.pdf\}", tex)
        assert bool(included) is (not m["skipped"])
    assert "pgfplots" not in tex and "tikzpicture" not in tex  # the figures are matplotlib's PDFs
    assert not re.search(r"(?<![\w\\-])(nan|NaN|None)(?![\w-])", tex)
    assert "\\VAR{" not in tex and "\\BLOCK{" not in tex
    # every non-ASCII character is mapped for pdflatex (a stray one would stop the build)
    assert all(ord(ch) < 128 for ch in tex), sorted({ch for ch in tex if ord(ch) >= 128})


def test_tex_escape():
    assert tex_escape("50% & $5 #1 a_b {x} ~^\\") == (
        r"50\% \& \$5 \#1 a\_\allowbreak{}b \{x\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    )
    assert (
        tex_escape("−3.0% × 2 ≈ ↑")
        == r"\ensuremath{-}3.0\% \ensuremath{\times} 2 \ensuremath{\approx} \ensuremath{\uparrow}"
    )
    assert tex_escape("ünïcode") == "?n?code"


@pytest.mark.parametrize("variant", ["cpu", "only_failed", "none"])
def test_bad_input_still_renders(tmp_path, variant):
    if variant == "cpu":
        df, cfg = demo_frame("cpu"), demo_settings("cpu")
    elif variant == "only_failed":
        df, cfg = demo_frame("gpu", imported=False), demo_settings("gpu")
        df["status"], df["failure_kind"], df["error"] = "failed", "oom", "out of memory"
    else:
        df, cfg = None, None
    paths = render_report(df, cfg, tmp_path, TEMPLATES, pdf=False)
    c = check_html(paths["html"].read_text())
    assert c.errors == []
    assert c.ids["gaps"] == 1  # the "Not in this report" box
    assert not re.search(r"(?<![\w-])(nan|NaN|None)(?![\w-])", " ".join(c.text))
    assert "\\end{document}" in paths["tex"].read_text()


def test_stale_figures_and_pdf_are_removed(tmp_path):
    render_report(demo_frame("gpu"), demo_settings("gpu"), tmp_path, TEMPLATES, pdf=False)
    assert (tmp_path / "figures" / "fig-memory.svg").exists()
    (tmp_path / "report.pdf").write_bytes(b"%PDF-stale")
    render_report(demo_frame("cpu"), demo_settings("cpu"), tmp_path, TEMPLATES, pdf=False)
    assert not (tmp_path / "figures" / "fig-memory.svg").exists()  # CPU: no device memory
    assert not (tmp_path / "report.pdf").exists()


def test_the_report_script_renders_a_parquet_round_trip(tmp_path):
    # The script as a user runs it (the workflow tests run it under Snakemake): the Parquet round trip
    # turns list columns into arrays, which the report must read as it reads lists.
    ape, df = tmp_path / "ape.parquet", demo_frame("gpu")
    df.to_parquet(ape)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(demo_config("gpu")))
    out = tmp_path / "report"
    script = [sys.executable, str(ROOT / "scripts" / "report.py"), "--input", str(ape), "--config", str(config)]
    done = subprocess.run([*script, "--out", str(out), "--no-pdf"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "report.html").exists() and (out / "report.tex").exists()
    assert f"report: {len(df)} rows" in done.stdout
