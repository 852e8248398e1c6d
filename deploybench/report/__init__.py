"""The report: result frame + config -> HTML (self-contained), LaTeX (booktabs + pgfplots) and PDF.

tables.py   frame + config -> table models (formatted text and the raw number of every cell)
figures.py  frame + config -> figure specs, drawn as inline SVG and as pgfplots code
findings.py headline sentences and the opening summary, generated from the data
render.py   assembles sections and renders workflow/templates/report.{html,tex}.j2
demo.py     a synthetic, schema-correct frame for development and tests (not measurements)
"""

from deploybench.report.render import build_report, compile_pdf, render_report

__all__ = ["build_report", "compile_pdf", "render_report"]
