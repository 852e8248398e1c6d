"""LaTeX: escaping, the table helpers the template calls, its Jinja environment, and pdflatex."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import jinja2

from deploybench.report.model import Cell, Column, Table

# pdflatex (T1) text for the characters TeX reads as commands and for the report's Unicode.
_MATH = r"- \times \div \approx \uparrow \downarrow \rightarrow ^\circ \Delta \mu \leq \geq \pm".split()
_TEXT = (r"\textasciitilde{}", r"\textasciicircum{}", r"\textless{}", r"\textgreater{}", r"\textbar{}")
_PUNCTUATION = ("---", "--", r"\dag{}", r"\ddag{}", r"\dots{}", "``", "''", "`", "'", "~")  # the last: no-break space
_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    **{ch: "\\" + ch for ch in "&%$#_{}"},
    **dict(zip("~^<>|", _TEXT)),
    **{ch: rf"\ensuremath{{{cmd}}}" for ch, cmd in zip("−×÷≈↑↓→°Δµ≤≥±", _MATH)},  # − is the minus sign
    **{ch: rf"\textsuperscript{{{digit}}}" for ch, digit in zip("⁰¹²³⁹", "01239")},
    **dict(zip("—–†‡…“”‘’\u00a0", _PUNCTUATION)),
    **{"✓": r"\ensuremath{\surd}", "✗": r"\ensuremath{\times}", "§": r"\S{}"},  # no package needed
}


def tex_escape(s) -> str:
    """Plain text -> LaTeX (pdflatex, T1): specials escaped, the report's Unicode mapped."""
    # A character pdflatex cannot typeset without extra packages becomes "?".
    text = "".join(_TEX_SPECIAL.get(ch) or (ch if ord(ch) < 128 else "?") for ch in str(s))
    # Let long identifiers and paths break after underscores and slashes.
    return text.replace(r"\_", r"\_\allowbreak{}").replace("/", r"/\allowbreak{}")


def tex_colspec(table: Table) -> str:
    return "".join(
        f">{{\\raggedright\\arraybackslash}}p{{{c.width or 0.22:.3f}\\linewidth}}" if c.wrap else c.align
        for c in table.columns
    )


def _lines(text: str, width: int) -> list[str]:
    """Greedy word wrap: narrow headers keep wide tables from shrinking to an unreadable size."""
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


def tex_header(col: Column) -> str:
    second = " ".join(x for x in ((f"({col.unit})" if col.unit else ""), col.arrow) if x)
    parts = [tex_escape(p) for p in _lines(col.label, 14) + (_lines(second, 16) if second else [])]
    if len(parts) == 1:
        return parts[0]
    align = "r" if col.align == "r" and not col.wrap else "l"
    return f"\\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}" + "\\\\".join(parts) + "\\end{tabular}"


def tex_cell(cell: Cell, col: Column) -> str:
    """A cell's text; a median and its interval (or run range) on two lines ("41.0" over "[40.6, 41.3]"); a
    host-paced figure in grey italics."""
    two = cell.interval or cell.runs
    text = r"\\{}".join(map(tex_escape, cell.text.split(" ", 1))) if two else tex_escape(cell.text)
    text = f"\\begin{{tabular}}[t]{{@{{}}r@{{}}}}{text}\\end{{tabular}}" if two else text
    text = f"\\textcolor{{gray}}{{\\itshape {text}}}" if cell.host else text
    style = {"failed": "\\textcolor{{failed}}{{{}}}", "missing": "\\textcolor{{gray}}{{{}}}"}
    style["baseline"] = "\\textit{{{}}}"
    return style[cell.kind].format(text) if cell.kind in style else text


def tex_url(url: str) -> str:
    return "\\url{" + re.sub(r"([%#{}\\])", r"\\\1", str(url)) + "}"


def environment(templates_dir: Path) -> jinja2.Environment:
    """Jinja delimiters that do not clash with TeX: \\VAR{...}, \\BLOCK{...}, %# comments."""
    starts = {"block": r"\BLOCK{", "variable": r"\VAR{", "comment": r"\#{"}
    delimiters = {f"{what}_start_string": start for what, start in starts.items()}
    delimiters |= {f"{what}_end_string": "}" for what in starts}
    options = {"trim_blocks": True, "lstrip_blocks": True, "undefined": jinja2.StrictUndefined}
    options |= {"line_comment_prefix": "%#", "autoescape": False, "keep_trailing_newline": True}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)), **delimiters, **options)
    env.filters["tex"] = tex_escape
    env.filters["tex_url"] = tex_url
    env.globals.update(tex_colspec=tex_colspec, tex_header=tex_header, tex_cell=tex_cell)
    return env


def _errors(stdout: str) -> str:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("!") or ":" in ln and "error" in ln.lower()]
    return "; ".join(lines[:3])


def compile_pdf(tex_path: Path, timeout_s: int = 240) -> tuple[Path | None, str]:
    """pdflatex twice (cross-references) in a scratch folder; returns (pdf or None, what happened)."""
    exe = shutil.which("pdflatex")
    if exe is None:
        return None, "not built: pdflatex is not on PATH (install texlive: .ci/setup_report_tools.sh)"
    tex_path = Path(tex_path).resolve()
    log_copy = tex_path.with_suffix(".latex.log")
    with tempfile.TemporaryDirectory(prefix="report-latex-") as build:
        cmd = [exe, "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", f"-output-directory={build}"]
        run = {"cwd": tex_path.parent, "capture_output": True, "text": True, "errors": "replace", "timeout": timeout_s}
        run["env"] = {**os.environ, "max_print_line": "1000"}
        for _ in range(2):
            try:
                proc = subprocess.run([*cmd, tex_path.name], **run)
            except subprocess.TimeoutExpired:
                return None, f"not built: pdflatex ran over {timeout_s} s"
            log = Path(build, tex_path.with_suffix(".log").name)
            if log.exists():
                shutil.copyfile(log, log_copy)
            if proc.returncode != 0:
                return None, f"not built: pdflatex failed ({_errors(proc.stdout or '') or 'see ' + log_copy.name})"
        built = Path(build, tex_path.with_suffix(".pdf").name)
        if not built.exists():
            return None, "not built: pdflatex produced no PDF"
        shutil.copyfile(built, tex_path.with_suffix(".pdf"))
    found = re.search(r"REPORT-PAGES: (\d+)", log_copy.read_text(errors="replace")) if log_copy.exists() else None
    return tex_path.with_suffix(".pdf"), "built with pdflatex" + (f" ({found.group(1)} pages)" if found else "")
