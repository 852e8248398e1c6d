"""The report: result frame + config -> HTML (self-contained), LaTeX (booktabs) and PDF, in layers.

fmt.py        numbers and text as printed (never "nan" or "None")
data.py       the frame as clean records, the config's studies, the reference cell
quantities.py a catalogue metric (deploybench/results/metrics.yaml) read from a row and printed
pacing.py     what paces a cell's decode, judged run by run; the verdict of boundness with its evidence
gate.py       the one rule for a stated difference: 95% intervals apart, neither cell host-paced
model.py      the table model: every cell's text and the number it came from
trust.py      the first screen: per machine, the figures to trust per model entry and backend
specs.py      the study tables, declared as data;  builder.py  the one builder of them
appendix.py   governance, failures, environment, methodology, definitions
imported.py   the imported study's figures beside ours, each gap split into factors; printed.py  as printed
figures.py    figure specs -> panels of numbers;  plot.py  drawn with matplotlib (SVG, PDF)
findings.py   a sentence per resolved difference, one line per study for the rest, and the opening summary
captions.py   the prose, from workflow/templates/captions.yaml
latex.py, render.py  the LaTeX helpers and pdflatex; sections -> report.{html,tex} and manifest.json
"""

from deploybench.report.latex import compile_pdf
from deploybench.report.render import build_report, render_report

__all__ = ["build_report", "compile_pdf", "render_report"]
