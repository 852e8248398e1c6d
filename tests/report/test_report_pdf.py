"""The LaTeX report compiles with pdflatex, and the PDF has the pages LaTeX says it shipped out.

The template writes `REPORT-PAGES: <n>` to the log at the end of the run (LaTeX's shipout
counter); `pdfinfo` (poppler-utils) reads the page count of the file. They must agree, and the
count must be plausible for the content. Run: .ci/setup_report_tools.sh, then `pytest -m latex`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploybench.report.render import render_report
from tests.fixtures.report_demo import demo_frame, demo_settings

pytestmark = [
    pytest.mark.latex,
    pytest.mark.skipif(
        shutil.which("pdflatex") is None or shutil.which("pdfinfo") is None,
        reason="pdflatex / pdfinfo not installed (.ci/setup_report_tools.sh)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "workflow" / "templates"
OUTPUT = ROOT / "test-output"


def pdf_pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))


def latex_pages(log: Path) -> int:
    return int(re.search(r"REPORT-PAGES: (\d+)", log.read_text(errors="replace")).group(1))


def test_pdf_builds_with_the_expected_page_count(tmp_path):
    paths = render_report(demo_frame("gpu"), demo_settings("gpu"), tmp_path, TEMPLATES)
    assert paths["pdf"] is not None, paths["pdf_status"]
    log = tmp_path / "report.latex.log"
    text = log.read_text(errors="replace")
    assert "There were undefined references" not in text
    assert not re.search(r"^! ", text, re.M)
    n = pdf_pages(paths["pdf"])
    assert n == latex_pages(log)
    assert 8 <= n <= 30, n  # 22 tables and 7 figures: a dozen-odd pages, not 2 and not 60
    assert paths["pdf_status"] == f"built with pdflatex ({n} pages)"
    OUTPUT.mkdir(exist_ok=True)
    shutil.copyfile(paths["pdf"], OUTPUT / "report-gpu.pdf")
    subprocess.run(
        ["pdftoppm", "-r", "60", "-png", "-f", "1", "-l", "2", str(paths["pdf"]), str(OUTPUT / "report-gpu-page")],
        check=True,
    )


def test_the_tex_compiles_on_its_own(tmp_path):
    """pdflatex run by hand on the rendered folder, the way a reader would build it."""
    paths = render_report(demo_frame("gpu"), demo_settings("gpu"), tmp_path / "r", TEMPLATES, pdf=False)
    for _ in range(2):
        proc = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
            cwd=paths["tex"].parent,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=240,
        )
        assert proc.returncode == 0, proc.stdout[-3000:]
    pdf = paths["tex"].with_suffix(".pdf")
    assert pdf_pages(pdf) == latex_pages(paths["tex"].with_suffix(".log"))


@pytest.mark.parametrize("variant", ["cpu", "only_failed", "none"])
def test_thin_inputs_compile(tmp_path, variant):
    if variant == "cpu":
        df, cfg = demo_frame("cpu"), demo_settings("cpu")
    elif variant == "only_failed":
        df, cfg = demo_frame("gpu", imported=False), demo_settings("gpu")
        df["status"], df["failure_kind"], df["error"] = "failed", "oom", "CUDA out of memory: 100% of 141 GB & more"
    else:
        df, cfg = None, None
    paths = render_report(df, cfg, tmp_path, TEMPLATES)
    assert paths["pdf"] is not None, paths["pdf_status"]
    n = pdf_pages(paths["pdf"])
    assert n == latex_pages(tmp_path / "report.latex.log") and n >= 3
