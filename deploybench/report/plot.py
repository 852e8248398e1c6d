"""Draw a Figure (figures.py) with matplotlib: inline SVG for the HTML, vector PDF for LaTeX.

Only matplotlib's SVG and PDF backends are used (no display, no pyplot). Output is deterministic: a fixed
SVG hash salt, text kept as text (svg.fonttype none), and no dates or versions in the metadata.
Element ids are prefixed with the figure's id, so several SVGs can sit in one HTML page.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from xml.sax.saxutils import escape

from deploybench.report.figures import Figure, Panel
from deploybench.report.fmt import fmt_num

try:
    import matplotlib
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.lines import Line2D
except ImportError:  # a GPU node without it still renders the report, figures skipped with the reason
    matplotlib = None

MISSING = "matplotlib is not installed (pip install -r requirements.txt)"
RC = {"svg.hashsalt": "deploybench-report", "svg.fonttype": "none", "pdf.fonttype": 42}  # deterministic, text as text
RC |= {"font.family": "DejaVu Sans", "font.size": 9.5, "axes.titlesize": 10, "axes.titleweight": "bold"}
RC |= {"axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False}
RC |= {"axes.grid": True, "axes.axisbelow": True, "grid.color": "#e3e3e3"}
RC |= {"axes.formatter.useoffset": False, "axes.formatter.limits": (-5, 6)}
SVG_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}
MARKERS = ["o", "s", "^", "D"]
WIDTH = {1: 6.4, 2: 9.0, 3: 9.8}  # inches per figure, by columns of panels
HEIGHT = {1: 3.6, 2: 3.2, 3: 2.9}  # inches per row of panels


def tick_label(v: float, _pos=None) -> str:
    """Short tick text: 600k and 1.5M rather than an exponent beside the axis."""
    scale, suffix = (1e6, "M") if abs(v) >= 1e6 else (1e3, "k") if abs(v) >= 1e4 else (1, "")  # from 10k on
    return f"{v / scale:g}{suffix}".replace("-", "−")


def _errors(s, xs, ys, idx) -> list[list[float]] | None:
    """Matplotlib's asymmetric error bars (below, above) for the points idx, from each point's ends."""
    ends = [s.ends[i] if i < len(s.ends) else None for i in idx]
    if not any(ends):
        return None
    return [
        [ys[k] - (e[0] if e else ys[k]) for k, e in enumerate(ends)],
        [(e[1] if e else ys[k]) - ys[k] for k, e in enumerate(ends)],
    ]


def _line(ax, p: Panel) -> None:
    for i, s in enumerate(p.series):
        marker = MARKERS[i % len(MARKERS)]
        paced = [bool(s.paced[k]) if k < len(s.paced) else False for k in range(len(s.y))]
        gpu = [k for k in range(len(s.y)) if not paced[k]]
        if gpu:  # a line joins the GPU-paced points only; their 95% intervals (or run ranges) as bars
            xs, ys = [s.x[k] for k in gpu], [s.y[k] for k in gpu]
            ax.errorbar(
                xs, ys, yerr=_errors(s, xs, ys, gpu), color=s.color, marker=marker, lw=2, ms=5, capsize=3, label=s.name
            )
        if host := [k for k in range(len(s.y)) if paced[k]]:  # host-paced: hollow, unjoined, with the run range
            xs, ys = [s.x[k] for k in host], [s.y[k] for k in host]
            ax.errorbar(
                xs,
                ys,
                yerr=_errors(s, xs, ys, host),
                color=s.color,
                marker=marker,
                ls="none",
                ms=6,
                mfc="white",
                capsize=3,
                label=None if gpu else s.name,
            )
        for x, y, text in zip(s.x, s.y, s.labels):
            ax.annotate(text, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8, color=s.color)
    if p.kind == "frontier":  # two measured figures: both axes from zero, their ticks matplotlib's
        ax.set_xlim(left=0)
    else:  # the axis values themselves as ticks
        xs = sorted({x for s in p.series for x in s.x})
        if p.log2_x:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:.0f}" for x in xs])
        ax.minorticks_off()
    if all(y >= 0 for s in p.series for y in s.y):
        ax.set_ylim(bottom=0)  # from zero, as the bars: a cut axis would magnify small differences


def _bars(ax, p: Panel) -> None:
    for s in p.series:
        if s.y:
            paced = bool(s.paced and s.paced[0])
            bars = ax.bar(
                s.x,
                s.y,
                color="white" if paced else s.color,
                edgecolor=s.color,
                hatch="///" if paced else None,
                width=0.6,
                label=s.name,
                yerr=_errors(s, s.x, s.y, range(len(s.y))),
                capsize=3,
                ecolor="#333",
            )
            ax.bar_label(bars, [fmt_num(v, 3) + (" ‡" if paced else "") for v in s.y], padding=2, fontsize=8.5)


def _stacked(ax, p: Panel) -> None:
    bottom = [0.0] * len(p.categories)
    for s in p.series:
        ax.bar(s.x, s.y, bottom=bottom, color=s.color, width=0.55, edgecolor="white", lw=0.5, label=s.name)
        bottom = [b + y for b, y in zip(bottom, s.y)]
    unit = p.y_label[p.y_label.rfind("(") + 1 : -1]
    for i, total in enumerate(bottom):
        ax.annotate(f"{fmt_num(total, 3)} {unit}", (i, total), xytext=(0, 3), textcoords="offset points", ha="center")


def _hist(ax, p: Panel) -> None:
    for s in p.series:
        ax.stairs(s.y, s.x, fill=True, facecolor=(s.color, 0.25), edgecolor=s.color, lw=1.5)
    ax.set_ylim(bottom=0)


def _serving(ax, p: Panel) -> None:
    """Load points joined per line (the panel's second figure dashed); a hollow marker is an invalid point, a cross
    a failed one (not joined); the key inside the axes."""
    names = list(dict.fromkeys(s.name for s in p.series))
    for s in p.series:
        marker, states = MARKERS[names.index(s.name) % len(MARKERS)], s.status or ["ok"] * len(s.y)
        joined = [k for k, state in enumerate(states) if state != "failed"]
        xs, ys = [s.x[k] for k in joined], [s.y[k] for k in joined]
        ax.plot(xs, ys, color=s.color, ls="--" if s.dashed else "-", lw=1.3 if s.dashed else 2, zorder=2)
        for k in joined:
            hollow = states[k] == "invalid"
            ax.plot(s.x[k], s.y[k], ls="none", marker=marker, ms=4 if s.dashed else 5.5, color=s.color, zorder=3,
                    mfc="white" if hollow else s.color, mew=1.4)  # fmt: skip
        for k in (k for k, state in enumerate(states) if state == "failed"):
            ax.plot(s.x[k], s.y[k], ls="none", marker="x", ms=8, mew=2.2, color=s.color, zorder=3)
        for x, y, text in zip(s.x, s.y, s.labels):
            ax.annotate(text, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7.5, color=s.color)
    if p.log2_x:  # loads 1, 4, 16, ...: evenly spaced, the loads as ticks
        ax.set_xscale("log", base=2)
        xs = sorted({x for s in p.series for x in s.x})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    elif p.log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(tick_label)
    else:
        ax.set_xlim(left=0)
    if p.log_y:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    for x, _ in p.limits:  # a target: the dashed points left of it meet it
        ax.axvline(x, color="#777", ls=":", lw=1.4, zorder=1)
    states = {state for s in p.series for state in s.status}
    first = {name: next(s for s in p.series if s.name == name) for name in names}
    key = [Line2D([], [], color=s.color, lw=2, marker=MARKERS[i % len(MARKERS)], label=name)
           for i, (name, s) in enumerate(first.items())]  # fmt: skip
    if any(s.dashed for s in p.series):
        key += [
            Line2D([], [], color="#555", lw=2, label=p.solid),
            Line2D([], [], color="#555", lw=1.3, ls="--", label=p.dashed),
        ]
    key += [Line2D([], [], color="#777", ls=":", lw=1.4, label=text) for _, text in p.limits]
    if "invalid" in states:
        key.append(Line2D([], [], color="#555", ls="none", marker="o", mfc="white", label="invalid (†)"))
    if "failed" in states:
        key.append(Line2D([], [], color="#555", ls="none", marker="x", mew=2, label="failed"))
    ax.legend(handles=key, loc="best", fontsize=7.5, frameon=True, framealpha=0.9, edgecolor="#ddd")


def _message(ax, p: Panel) -> None:
    """Nothing to draw: the reason in the panel's place, no empty axes."""
    ax.set_axis_off()
    text = "\n".join(textwrap.wrap(p.note, 44))
    box = {"boxstyle": "round,pad=0.8", "fc": "#f7f7f8", "ec": "#b9b9b9", "ls": "--"}
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8.5, color="#444", bbox=box)


DRAW = {"line": _line, "frontier": _line, "bar": _bars, "stacked": _stacked, "hist": _hist}
DRAW |= {"serving": _serving, "message": _message}


def draw(fig: Figure) -> MplFigure:
    n = len(fig.panels)
    cols = max(1, min(fig.columns, n, 3))
    rows = math.ceil(n / cols)
    out = MplFigure(figsize=(WIDTH[cols], HEIGHT[cols] * rows + 0.4), layout="constrained")
    axes = out.subplots(rows, cols, squeeze=False).ravel()
    for ax, p in zip(axes, fig.panels):
        DRAW[p.kind](ax, p)
        if p.kind == "message":
            ax.set_title(p.title, pad=4)
            continue
        notes = p.note.split("; ") if p.note else []  # one clause a line, in small type under the title
        ax.set_title(p.title, pad=4 + 11 * len(notes))
        if notes:
            ax.text(0.5, 1.01, "\n".join(notes), transform=ax.transAxes, ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(p.y_label)
        ax.yaxis.set_major_formatter(tick_label)
        if p.categories:
            ax.set_xticks(range(len(p.categories)), p.categories, rotation=20 if len(p.categories) > 2 else 0)
            ax.grid(False, axis="x")
        else:
            ax.set_xlabel(p.x_label)
        ax.margins(y=0.12)
    for ax in axes[n:]:
        ax.set_visible(False)
    inside = any(p.kind in ("serving", "message") for p in fig.panels)  # serving: each panel's key in its axes
    if any(p.kind != "hist" for p in fig.panels) and not inside:  # one legend above the panels
        handles, labels = axes[0].get_legend_handles_labels()
        if any(p.kind == "bar" for p in fig.panels):  # bars: each model's colour, from every panel
            seen = {label: h for ax in axes[:n] for h, label in zip(*ax.get_legend_handles_labels())}
            labels, handles = list(seen), list(seen.values())
        width = WIDTH[cols] * 72  # points: as many columns as the longest label lets fit
        ncols = max(1, min(len(labels), 6, int(width // (7 * max(map(len, labels), default=1) + 40))))
        out.legend(handles, labels, loc="outside upper center", ncols=ncols)
    return out


def tex_width(fig: Figure) -> float:
    """The figure's width in the PDF, as a fraction of the line: one type size for all figures."""
    return min(1.0, WIDTH[max(1, min(fig.columns, len(fig.panels), 3))] / WIDTH[2])


def _inline(svg: str, fig: Figure) -> str:
    """matplotlib's SVG file -> one element for an HTML page: no XML prolog, ids of its own."""
    svg = svg[svg.index("<svg") :]
    svg = svg.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "").replace("xlink:href=", "href=")
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{fig.id}-{m.group(1)}"', svg)
    svg = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: f"{m.group(1)}{fig.id}-{m.group(2)}", svg)
    label = escape(fig.title, {'"': "&quot;"})
    svg = svg.replace("<svg ", f'<svg class="chart" role="img" aria-label="{label}" ', 1)
    head = svg.index(">") + 1  # the accessible name, inside the element (metadata would add RDF namespaces)
    return f"{svg[:head]}<title>{escape(fig.title)}</title>{svg[head:]}"


def render(fig: Figure) -> tuple[str, bytes]:
    """(inline SVG text, PDF bytes) of a figure that has panels."""
    with matplotlib.rc_context(RC):
        mfig = draw(fig)
        svg, pdf = io.StringIO(), io.BytesIO()
        mfig.savefig(svg, format="svg", metadata=SVG_METADATA)
        mfig.savefig(pdf, format="pdf", metadata={**PDF_METADATA, "Title": fig.title})
    return _inline(svg.getvalue(), fig), pdf.getvalue()
