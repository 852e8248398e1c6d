"""Report tables: pure functions (result frame + config) -> table models.

A table model holds, for every cell, the formatted text the report prints *and* the raw number it
came from, so tests can check one against the other and both templates (HTML, LaTeX) print the
same thing. Nothing here renders markup and nothing prints "nan" or "None": a missing figure is
an em dash with a note saying why, a failed cell says "failed:" and its reason.

Every table comes from a study of the config (DESIGN.md, "Cells and studies"); a table whose
study is absent, or whose figures are all missing, is kept as a *skipped* table with the reason,
so the report says what is missing instead of dropping it silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

DASH = "—"
MINUS = "−"
OURS = "deploybench"

# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------


def num(x) -> float | None:
    """Any scalar -> finite float, else None (None, NaN, pd.NA, text, inf)."""
    if x is None or isinstance(x, (str, bytes)):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_num(x, sig: int = 4) -> str:
    """Significant digits without scientific notation for ordinary magnitudes; thousands commas."""
    v = num(x)
    if v is None:
        return DASH
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    decimals = max(0, sig - 1 - mag)
    if decimals > 8:
        return f"{v:.{sig - 1}e}".replace("-", MINUS)
    return f"{v:,.{decimals}f}".replace("-", MINUS)


def fmt_int(x) -> str:
    v = num(x)
    return DASH if v is None else f"{round(v):,d}".replace("-", MINUS)


def fmt_pct(p, decimals: int = 1, signed: bool = True) -> str:
    v = num(p)
    if v is None:
        return DASH
    if round(v, decimals) == 0:
        return f"{0:.{decimals}f}%"
    s = f"{v:+.{decimals}f}%" if signed else f"{v:.{decimals}f}%"
    return s.replace("-", MINUS)


def fmt_ratio(r) -> str:
    v = num(r)
    if v is None:
        return DASH
    return f"{fmt_num(v, 3)}×"


def fmt_params(n) -> str:
    """A parameter count for prose: 3.61 B, 218 M, 2.56 k (B = 10^9, M = 10^6, k = 10^3)."""
    v = num(n)
    if v is None:
        return DASH
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{fmt_num(v / div, 3)} {suffix}"
    return fmt_int(v)


def pct_change(new, old) -> float | None:
    """(new / old - 1) x 100, None when either is missing or old is zero."""
    n, o = num(new), num(old)
    if n is None or o is None or o == 0:
        return None
    return (n / o - 1.0) * 100.0


def ratio(a, b) -> float | None:
    x, y = num(a), num(b)
    if x is None or y is None or y == 0:
        return None
    return x / y


def short(text, limit: int = 90) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


# --------------------------------------------------------------------------------------------
# table model
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    text: str
    value: float | None = None  # the number shown, in the column's unit
    raw: Any = None  # the frame's value it came from (bytes, not GB)
    kind: str = "num"  # num | text | failed | missing | invalid | baseline
    note: str | None = None  # why a figure is missing, the full error, ...
    href: str | None = None


@dataclass
class Column:
    key: str
    label: str
    unit: str | None = None
    better: str | None = None  # "higher" | "lower" | None
    align: str = "r"  # r | l
    wrap: bool = False  # long text: wrap in LaTeX (p column)
    width: float | None = None  # LaTeX p-column width as a fraction of the line (wrap columns)

    @property
    def header(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def arrow(self) -> str:
        return {"higher": "↑", "lower": "↓"}.get(self.better or "", "")


@dataclass
class Row:
    cells: dict[str, Cell]
    key: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # ok | failed | invalid | missing


@dataclass
class Table:
    id: str
    title: str
    caption: str
    columns: list[Column] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the table has no rows
    study: str | None = None
    kind: str = "table"
    long: bool = False  # many rows: LaTeX longtable
    compact: bool = False  # small table: HTML lays several side by side

    def cell(self, column: str, **key) -> Cell:
        """The cell of the first row whose key matches (for tests and findings)."""
        for row in self.rows:
            if all(row.key.get(k) == v for k, v in key.items()):
                return row.cells[column]
        raise KeyError(f"{self.id}: no row with {key}")


def skipped_table(tid: str, title: str, reason: str, study: str | None = None) -> Table:
    return Table(id=tid, title=title, caption="", skipped=reason, study=study)


# --------------------------------------------------------------------------------------------
# metrics: label, unit, direction and how to read one from a row
# --------------------------------------------------------------------------------------------


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    better: str | None
    col: str | None = None  # frame column (default: key)
    scale: float = 1.0
    sig: int = 4
    fn: Callable[[dict], Any] | None = None  # computed metrics

    def raw(self, row: dict):
        if self.fn is not None:
            return self.fn(row)
        return row.get(self.col or self.key)

    def value(self, row: dict) -> float | None:
        v = num(self.raw(row))
        return None if v is None else v * self.scale

    def fmt(self, v) -> str:
        return fmt_num(v, self.sig)

    def column(self, key: str | None = None, label: str | None = None) -> Column:
        return Column(key or self.key, label or self.label, self.unit, self.better)


def _other_bytes(row: dict):
    peak, w, kv = num(row.get("peak_allocated_bytes")), num(row.get("weights_bytes")), num(row.get("kv_cache_bytes"))
    if peak is None or w is None:
        return None
    return max(0.0, peak - w - (kv or 0.0))


GB = 1e-9
METRICS: dict[str, Metric] = {
    m.key: m
    for m in [
        Metric("ttft_ms", "TTFT", "ms", "lower"),
        Metric("e2e_ms_p50", "e2e p50", "ms", "lower"),
        Metric("e2e_ms_p95", "e2e p95", "ms", "lower"),
        Metric("e2e_ms_p99", "e2e p99", "ms", "lower"),
        Metric("e2e_tps", "e2e tok/s", "tok/s", "higher"),
        Metric("decode_tps", "decode tok/s", "tok/s", "higher"),
        Metric("decode_cv", "decode CV", "% run to run", "lower", col="decode_tps_cv", scale=100.0, sig=2),
        Metric("tpot_ms", "TPOT", "ms/token", "lower"),
        Metric("itl_ms_p50", "ITL p50", "ms", "lower"),
        Metric("itl_ms_p95", "ITL p95", "ms", "lower"),
        Metric("peak_gb", "peak allocated", "GB", "lower", col="peak_allocated_bytes", scale=GB),
        Metric("reserved_gb", "peak reserved", "GB", "lower", col="peak_reserved_bytes", scale=GB),
        Metric("weights_gb", "weights", "GB", None, col="weights_bytes", scale=GB),
        Metric("kv_gb", "KV cache", "GB", None, col="kv_cache_bytes", scale=GB),
        Metric("kv_analytic_gb", "KV analytic", "GB", None, col="kv_cache_bytes_analytic", scale=GB),
        Metric("other_gb", "rest", "GB", None, scale=GB, fn=_other_bytes),
        Metric("j_per_1k_tokens", "energy", "J per 1000 tok", "lower"),
        Metric("j_per_1k_tokens_net", "energy, idle subtracted", "J per 1000 tok", "lower"),
        Metric("tokens_per_j", "tokens per joule", "tok/J", "higher"),
        Metric("avg_power_w", "avg power", "W", None),
        Metric("idle_power_w", "idle power", "W", None),
        Metric("energy_window_s", "window", "s", None, sig=3),
        Metric("roofline_fraction", "roofline fraction", "% of bound", "higher", scale=100.0, sig=3),
        Metric("compile_s", "compile", "s", None, sig=3),
        Metric("total_params_b", "total params", "B", None, col="total_params", scale=1e-9),
        Metric("active_params_b", "active params", "B", None, col="active_params", scale=1e-9),
    ]
}


def ape_columns() -> dict[str, dict]:
    """APE column metadata from the metric catalogue."""
    from deploybench import metrics

    return {
        m.name: {"label": m.header_label, "unit": m.unit, "higher_is_better": m.higher_is_better}
        for m in metrics.of_stage(metrics.Stage.APE)
    }


def ape_metric(col: str, spec: dict) -> Metric:
    better = "higher" if spec.get("higher_is_better", True) else "lower"
    return Metric(col, spec.get("label", col), spec.get("unit", ""), better)


# --------------------------------------------------------------------------------------------
# data access: the frame as clean records, studies, the reference cell
# --------------------------------------------------------------------------------------------

KEY_COLS = ("model", "backend", "dtype", "context_tokens", "gen_tokens", "decoding")
STUDY_KINDS = (
    "main_comparison",
    "context_scaling",
    "decoding_ablation",
    "precision_sweep",
    "backend_comparison",
    "experts_comparison",
)


def _clean(v):
    """Frame value -> plain Python: NaN/NA -> None, numpy -> list/scalar."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def records(df: pd.DataFrame | None) -> list[dict]:
    if df is None or len(df) == 0:
        return []
    return [{k: _clean(v) for k, v in r.items()} for r in df.to_dict("records")]


def _int(v):
    n = num(v)
    return None if n is None else int(round(n))


def _key(model, backend, dtype, ctx, gen, dec) -> tuple:
    return (model, backend, dtype, _int(ctx), _int(gen), dec)


def row_key(r: dict) -> tuple:
    return _key(*(r.get(c) for c in KEY_COLS))


def is_ours(r: dict) -> bool:
    src = r.get("source")
    return src in (None, "", OURS)


def is_failed(r: dict | None) -> bool:
    return r is not None and r.get("status") == "failed"


def is_invalid(r: dict | None) -> bool:
    return r is not None and r.get("valid") is False and not is_failed(r)


def failure_text(r: dict) -> str:
    kind = r.get("failure_kind") or "error"
    err = r.get("error")
    return f"failed: {kind}" + (f" ({short(err, 70)})" if err else "")


def _as_list(v) -> list:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


@dataclass
class Study:
    name: str
    kind: str
    models: list[str]
    contexts: list[int]
    gens: list[int]
    decodings: list[str]
    dtypes: list[str]
    backends: list[str]

    def describe(self) -> str:
        parts = [
            f"models {', '.join(self.models)}",
            f"contexts {', '.join(map(str, self.contexts))} tokens",
            f"gen {', '.join(map(str, self.gens))} tokens",
            f"decoding {', '.join(self.decodings)}",
            f"dtype {', '.join(self.dtypes)}",
            f"backend {', '.join(self.backends)}",
        ]
        return "; ".join(parts)


class ReportData:
    """The frame split into our rows and imported rows, indexed by cell, plus the config."""

    def __init__(self, df: pd.DataFrame | None, config: dict | None):
        self.config = config or {}
        self.all = records(df)
        self.ours = [r for r in self.all if is_ours(r)]
        self.imported = [r for r in self.all if not is_ours(r)]
        self.index: dict[tuple, dict] = {}
        for r in self.ours:
            self.index[row_key(r)] = r
        cfg_models = list((self.config.get("models") or {}).keys())
        seen = [r.get("model") for r in self.ours if r.get("model")]
        self.models = [m for m in cfg_models if m in seen] + sorted(set(seen) - set(cfg_models))
        self.ape = ape_columns()
        analysis = self.config.get("analysis") or {}
        self.ref = dict(analysis.get("reference_cell") or {})
        self.baseline_cfg = analysis.get("baseline_model")
        self.baseline_note = None
        if self.baseline_cfg in self.models:
            self.baseline = self.baseline_cfg
        else:
            self.baseline = self.models[0] if self.models else None
            if self.baseline_cfg and self.baseline:
                self.baseline_note = (
                    f"analysis.baseline_model {self.baseline_cfg!r} has no rows in the data; "
                    f"{self.baseline!r} is used as the baseline instead"
                )
            elif self.baseline:
                self.baseline_note = f"no analysis.baseline_model in the config; {self.baseline!r} is used"

    # config ---------------------------------------------------------------------------------
    def model_cfg(self, model: str) -> dict:
        return (self.config.get("models") or {}).get(model) or {}

    def metadata(self, model: str) -> dict:
        return self.model_cfg(model).get("metadata") or {}

    def dtype_for(self, model: str, dtype: str) -> str:
        return self.model_cfg(model).get("dtype") or dtype

    def studies(self, kind: str | None = None) -> list[Study]:
        out = []
        for name, s in (self.config.get("studies") or {}).items():
            if not isinstance(s, dict):
                continue
            if kind is not None and s.get("kind") != kind:
                continue
            out.append(self._study(name, s))
        return out

    def _study(self, name: str, s: dict) -> Study:
        # Same axes and defaults as deploybench.config.study_cells (decoding greedy, bfloat16, eager);
        # contexts and gen are required there, here an absent one falls back to what the rows hold.
        def axis(key, default):
            vals = _as_list(s.get(key))
            return vals if vals else default

        ours = self.ours
        return Study(
            name=name,
            kind=s.get("kind", ""),
            models=[str(m) for m in axis("models", self.models)],
            contexts=[int(c) for c in axis("contexts", sorted({_int(r.get("context_tokens")) for r in ours} - {None}))],
            gens=[int(g) for g in axis("gen", sorted({_int(r.get("gen_tokens")) for r in ours} - {None}))],
            decodings=[str(d) for d in axis("decoding", ["greedy"])],
            dtypes=[str(d) for d in axis("dtypes", ["bfloat16"])],
            backends=[str(b) for b in axis("backends", ["eager"])],
        )

    # rows -----------------------------------------------------------------------------------
    def row(self, model, backend, dtype, ctx, gen, dec) -> dict | None:
        return self.index.get(_key(model, backend, self.dtype_for(model, dtype), ctx, gen, dec))

    def study_rows(self, st: Study) -> list[dict]:
        out = []
        for m in st.models:
            for b in st.backends:
                for d in st.dtypes:
                    for c in st.contexts:
                        for g in st.gens:
                            for dec in st.decodings:
                                r = self.row(m, b, d, c, g, dec)
                                if r is not None and r not in out:
                                    out.append(r)
        return out

    def study_ref(self, st: Study) -> dict:
        """The reference cell inside a study: analysis.reference_cell where the study has it."""

        def pick(val, axis, default):
            return val if val in axis else default

        ref = self.ref
        return {
            "context": pick(_int(ref.get("context")), st.contexts, max(st.contexts) if st.contexts else None),
            "gen": pick(_int(ref.get("gen")), st.gens, st.gens[0] if st.gens else None),
            "decoding": pick(
                ref.get("decoding"),
                st.decodings,
                "greedy" if "greedy" in st.decodings else (st.decodings[0] if st.decodings else None),
            ),
            "dtype": pick(ref.get("dtype"), st.dtypes, st.dtypes[0] if st.dtypes else None),
            "backend": pick(ref.get("backend"), st.backends, st.backends[0] if st.backends else None),
        }

    def ref_row(self, model: str, ref: dict) -> dict | None:
        return self.row(model, ref["backend"], ref["dtype"], ref["context"], ref["gen"], ref["decoding"])

    def main_study(self) -> Study | None:
        st = self.studies("main_comparison")
        return st[0] if st else None

    def reference(self) -> dict | None:
        """The report's reference cell: from the main study (or any study) with the config's values."""
        st = self.main_study() or next(iter(self.studies()), None)
        return self.study_ref(st) if st else None

    def reason_missing(self, rows: Iterable[dict | None], what: str) -> str:
        """A phrase saying why a figure family is missing from these rows."""
        rows = [r for r in rows if r is not None]
        if not rows:
            return "the data has no row for these cells"
        if all(is_failed(r) for r in rows):
            kinds = sorted({r.get("failure_kind") or "error" for r in rows})
            return f"every cell failed ({', '.join(kinds)})"
        col, label = {
            "energy": ("energy_source", "energy not measured"),
            "memory": ("memory_null_reason", "device memory not measured"),
        }.get(what, (None, None))
        reasons = sorted({short(str(r.get(col)), 120) for r in rows if col and r.get(col)})
        if label:
            return label + (f" ({'; '.join(reasons[:2])})" if reasons else "")
        return "the rows have no figures for it"


def cell_label(ref: dict) -> str:
    return (
        f"context {ref['context']} tokens, {ref['gen']} generated tokens, {ref['decoding']}, {ref['dtype']}, "
        f"{ref['backend']}"
    )


def cell_short(ref: dict) -> str:
    return f"{ref['context']}/{ref['gen']}"


# --------------------------------------------------------------------------------------------
# cell builders
# --------------------------------------------------------------------------------------------


def metric_cell(r: dict | None, m: Metric, failed_text: bool = False) -> Cell:
    if r is None:
        return Cell(DASH, kind="missing", note="no row in the data for this cell")
    if is_failed(r):
        # a number's column stays narrow: the kind here, the full error in the tooltip and the Failures table
        text = f"failed: {r.get('failure_kind') or 'error'}" if failed_text else "failed"
        return Cell(text, kind="failed", note=r.get("error") or r.get("failure_kind"))
    v = m.value(r)
    if v is None:
        return Cell(DASH, raw=None, kind="missing", note=f"{m.label} not measured for this cell")
    if is_invalid(r):
        reasons = "; ".join(map(str, _as_list(r.get("invalid_reasons")))) or "invalid"
        return Cell(m.fmt(v) + " †", value=v, raw=m.raw(r), kind="invalid", note=reasons)
    return Cell(m.fmt(v), value=v, raw=m.raw(r))


def pct_cell(p, note: str | None = None) -> Cell:
    v = num(p)
    return Cell(fmt_pct(v), value=v, kind="num" if v is not None else "missing", note=note)


def text_cell(text, note: str | None = None, href: str | None = None) -> Cell:
    if text is None or (isinstance(text, str) and not text.strip()):
        return Cell(DASH, kind="missing", note=note or "not given")
    return Cell(str(text), raw=text, kind="text", note=note, href=href)


def status_cell(r: dict | None) -> Cell:
    if r is None:
        return Cell("not in the data", kind="missing", note="the cell has no row: not run yet?")
    if is_failed(r):
        return Cell(failure_text(r), kind="failed", note=r.get("error"))
    if is_invalid(r):
        reasons = "; ".join(map(str, _as_list(r.get("invalid_reasons")))) or "invalid"
        return Cell(f"invalid: {short(reasons, 70)}", kind="invalid", note=reasons)
    return Cell("ok", kind="text")


def model_col() -> Column:
    return Column("model", "Model", align="l")


def _has_values(table: Table, keys: Iterable[str]) -> bool:
    keys = list(keys)
    return any(row.cells[k].value is not None for row in table.rows for k in keys if k in row.cells)


def _finish(
    table: Table, data: ReportData, rows_used: list[dict | None], metric_keys: list[str], what: str = ""
) -> Table:
    """Mark a table skipped when none of its figures exist, and add the common footnotes."""
    if not table.rows:
        table.skipped = table.skipped or "no cells of this study are in the data"
        return table
    if not _has_values(table, metric_keys):
        table.skipped = data.reason_missing(rows_used, what)
        return table
    # A figure family nobody measured (device memory or energy on a CPU run) would be a column of
    # dashes: leave it out and say so.
    empty = [
        c
        for c in table.columns
        if c.unit
        and all(row.cells[c.key].kind in ("missing", "failed") for row in table.rows if c.key in row.cells)
        and any(row.cells.get(c.key) is not None and row.cells[c.key].kind == "missing" for row in table.rows)
    ]
    if empty and len(empty) < len(table.columns):
        table.columns = [c for c in table.columns if c not in empty]
        table.notes.append("Left out, not measured in these cells: " + ", ".join(c.header for c in empty) + ".")
    kinds = {row.cells[c.key].kind for row in table.rows for c in table.columns if c.key in row.cells}
    if "invalid" in kinds:
        table.notes.append(
            "† the cell failed a validity check (see Failures and invalid cells); its figure is shown but should not "
            "be trusted."
        )
    if "failed" in kinds:
        table.notes.append(
            "failed: the cell ran and failed as expected (out of memory, unsupported dtype, context too long); the "
            "reason is in Failures and invalid cells."
        )
    if "missing" in kinds:
        table.notes.append(
            f"{DASH} the figure is not in the data (not measured on this device, or the cell has no row)."
        )
    return table


def _no_study(kind: str) -> str:
    return f"the config has no {kind} study"


def _display_rows_key(st: Study) -> list[str]:
    """Axes with more than one value in a study become row-key columns."""
    out = []
    for axis, vals in (("gen", st.gens), ("decoding", st.decodings), ("dtype", st.dtypes), ("backend", st.backends)):
        if len(vals) > 1:
            out.append(axis)
    return out


_AXIS_COL = {
    "gen": Column("gen", "Generated", "tokens"),
    "decoding": Column("decoding", "Decoding", align="l"),
    "dtype": Column("dtype", "dtype", align="l"),
    "backend": Column("backend", "Backend", align="l"),
    "context": Column("context", "Context", "tokens"),
}


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def latency_reference(data: ReportData) -> list[Table]:
    title = "Latency and throughput at the reference cell"
    studies = data.studies("main_comparison")
    if not studies:
        return [skipped_table("table-latency-ref", title, _no_study("main_comparison"))]
    out = []
    for i, st in enumerate(studies):
        ref = data.study_ref(st)
        keys = ("ttft_ms", "e2e_ms_p50", "e2e_ms_p95", "e2e_tps", "decode_tps", "decode_cv", "tpot_ms")
        metrics = [METRICS[k] for k in keys]
        cols = [model_col(), *[m.column() for m in metrics], Column("n_runs", "Runs", "n")]
        t = Table(
            id=_tid("table-latency-ref", i),
            title=title,
            study=st.name,
            columns=cols,
            caption=(
                f"Study {st.name}, at {cell_label(ref)}. TTFT is the median of N one-token generates; "
                "e2e p50/p95 are percentiles of the full-generate wall time over N runs; e2e tok/s = "
                "generated tokens / e2e p50 (prefill included: the study's \u201cTPOT (tok/s)\u201d); decode tok/s = "
                "(gen − 1) / (last − first token time); decode CV = standard deviation ÷ mean of decode tok/s "
                "over the N runs; TPOT (ms/token) = 1000 / decode tok/s. ↑ higher is better, ↓ lower is better."
            ),
        )
        used = []
        for m in st.models:
            r = data.ref_row(m, ref)
            used.append(r)
            cells = {"model": text_cell(m)}
            cells |= {mt.key: metric_cell(r, mt, failed_text=(mt.key == "ttft_ms")) for mt in metrics}
            runs = None if r is None or is_failed(r) else _int(r.get("n_runs"))
            cells["n_runs"] = Cell(fmt_int(runs), value=runs, raw=runs, kind="num" if runs is not None else "missing")
            t.rows.append(Row(cells, key={"model": m, **ref}, status=_status(r)))
        out.append(_finish(t, data, used, [m.key for m in metrics]))
    return out


def _status(r) -> str:
    if r is None:
        return "missing"
    if is_failed(r):
        return "failed"
    return "invalid" if is_invalid(r) else "ok"


def _tid(base: str, i: int) -> str:
    return base if i == 0 else f"{base}-{i + 1}"


def by_context(data: ReportData, metric_keys: list[str], tid: str, title: str, what: str, caption: str) -> list[Table]:
    """Pivot a main study: one row per model (x metric, x other varying axes), one column per context."""
    studies = data.studies("main_comparison")
    if not studies:
        return [skipped_table(tid, title, _no_study("main_comparison"))]
    out = []
    for i, st in enumerate(studies):
        extra = _display_rows_key(st)
        metrics = [METRICS[k] for k in metric_keys]
        unit = metrics[0].unit
        cols = [model_col(), *[_AXIS_COL[a] for a in extra]]
        if len(metrics) > 1:
            cols.append(Column("metric", "Metric", align="l"))
        cols += [Column(f"c{c}", f"{c} tok", unit, metrics[0].better) for c in st.contexts]
        t = Table(
            id=_tid(tid, i),
            title=title,
            study=st.name,
            columns=cols,
            caption=(
                f"Study {st.name}: {caption} Columns are the prompt lengths (tokens); every figure is in {unit}. "
                + _arrow_text(metrics[0].better)
            ),
        )
        used = []
        for m in st.models:
            for g in st.gens:
                for dec in st.decodings:
                    for dt in st.dtypes:
                        for b in st.backends:
                            for mt in metrics:
                                cells = {"model": text_cell(m)}
                                for a, v in zip(("gen", "decoding", "dtype", "backend"), (g, dec, dt, b)):
                                    if a in extra:
                                        cells[a] = text_cell(v) if a != "gen" else Cell(str(v), value=v, raw=v)
                                if len(metrics) > 1:
                                    cells["metric"] = text_cell(mt.label)
                                for c in st.contexts:
                                    r = data.row(m, b, dt, c, g, dec)
                                    used.append(r)
                                    cells[f"c{c}"] = metric_cell(r, mt, failed_text=True)
                                key = {
                                    "model": m,
                                    "gen": g,
                                    "decoding": dec,
                                    "dtype": data.dtype_for(m, dt),
                                    "backend": b,
                                    "metric": mt.key,
                                }
                                t.rows.append(Row(cells, key=key))
        out.append(_finish(t, data, used, [f"c{c}" for c in st.contexts], what))
    return out


def _arrow_text(better: str | None) -> str:
    return {"higher": "↑ higher is better.", "lower": "↓ lower is better."}.get(better or "", "")


def tps_vs_context(data: ReportData) -> list[Table]:
    return by_context(
        data,
        ["e2e_tps", "decode_tps"],
        "table-tps-context",
        "Throughput against context",
        "",
        "end-to-end tok/s (prefill included) and decode-only tok/s at each context.",
    )


def ttft_vs_context(data: ReportData) -> list[Table]:
    return by_context(
        data,
        ["ttft_ms"],
        "table-ttft-context",
        "TTFT against context",
        "",
        "time to first token (prefill included, median of N).",
    )


def energy_vs_context(data: ReportData) -> list[Table]:
    return by_context(
        data,
        ["j_per_1k_tokens"],
        "table-energy-context",
        "Energy per 1000 tokens against context",
        "energy",
        "gross GPU energy over the measurement window per 1000 generated tokens.",
    )


def tps_change(data: ReportData) -> list[Table]:
    tid, title = "table-tps-change", "Change in throughput from the shortest to the longest context"
    studies = data.studies("main_comparison")
    if not studies:
        return [skipped_table(tid, title, _no_study("main_comparison"))]
    out = []
    for i, st in enumerate(studies):
        if len(st.contexts) < 2:
            out.append(skipped_table(_tid(tid, i), title, f"study {st.name} has one context only", st.name))
            continue
        ref = data.study_ref(st)
        lo, hi = min(st.contexts), max(st.contexts)
        cols = [model_col()]
        for mk in ("e2e_tps", "decode_tps"):
            m = METRICS[mk]
            cols += [
                Column(f"{mk}_lo", f"{m.label} at {lo}", "tok/s", "higher"),
                Column(f"{mk}_hi", f"{m.label} at {hi}", "tok/s", "higher"),
                Column(f"{mk}_chg", f"{m.label} change", "%", None),
            ]
        t = Table(
            id=_tid(tid, i),
            title=title,
            study=st.name,
            columns=cols,
            caption=(
                f"Study {st.name}: tok/s at the shortest ({lo} tokens) and the longest ({hi} tokens) context, "
                f"and the change = (at {hi} / at {lo} − 1) × 100; {ref['gen']} generated tokens, {ref['decoding']}, "
                f"{ref['dtype']}, {ref['backend']}. A negative change means throughput falls as the context grows."
            ),
        )
        used = []
        for m in st.models:
            r_lo = data.row(m, ref["backend"], ref["dtype"], lo, ref["gen"], ref["decoding"])
            r_hi = data.row(m, ref["backend"], ref["dtype"], hi, ref["gen"], ref["decoding"])
            used += [r_lo, r_hi]
            cells = {"model": text_cell(m)}
            for mk in ("e2e_tps", "decode_tps"):
                mt = METRICS[mk]
                a, b = metric_cell(r_lo, mt, True), metric_cell(r_hi, mt, True)
                cells[f"{mk}_lo"], cells[f"{mk}_hi"] = a, b
                cells[f"{mk}_chg"] = pct_cell(pct_change(b.value, a.value))
            t.rows.append(Row(cells, key={"model": m}))
        out.append(_finish(t, data, used, ["e2e_tps_lo", "e2e_tps_hi"]))
    return out


def memory_reference(data: ReportData) -> list[Table]:
    """Peak memory at the reference cell with its parts, then the pairwise gaps."""
    tid, title = "table-memory", "Peak memory at the reference cell"
    gid, gtitle = "table-memory-gap", "Peak-memory gap between models"
    studies = data.studies("main_comparison")
    if not studies:
        return [
            skipped_table(tid, title, _no_study("main_comparison")),
            skipped_table(gid, gtitle, _no_study("main_comparison")),
        ]
    out = []
    for i, st in enumerate(studies):
        ref = data.study_ref(st)
        metrics = [METRICS[k] for k in ("weights_gb", "kv_gb", "kv_analytic_gb", "other_gb", "peak_gb", "reserved_gb")]
        t = Table(
            id=_tid(tid, i),
            title=title,
            study=st.name,
            columns=[model_col(), *[m.column() for m in metrics]],
            caption=(
                f"Study {st.name}, at {cell_label(ref)}. GB = 10⁹ bytes. Weights = allocated after load; KV cache = "
                "bytes of "
                "the returned cache tensors (KV analytic: from the architecture, sliding windows included); rest = "
                "peak − "
                "weights − KV cache (activations, workspace); peak = torch.cuda.max_memory_allocated during the "
                "measured "
                "decode with the cache alive; reserved = the allocator's peak reservation. ↓ lower is better."
            ),
        )
        used, peaks = [], {}
        for m in st.models:
            r = data.ref_row(m, ref)
            used.append(r)
            cells = {"model": text_cell(m)} | {
                mt.key: metric_cell(r, mt, failed_text=(mt.key == "weights_gb")) for mt in metrics
            }
            peaks[m] = cells["peak_gb"].value
            t.rows.append(Row(cells, key={"model": m, **ref}, status=_status(r)))
        out.append(_finish(t, data, used, ["peak_gb"], "memory"))
        out.append(_memory_gap(data, st, peaks, _tid(gid, i), gtitle, ref, out[-1].skipped))
    return out


def _memory_gap(
    data: ReportData, st: Study, peaks: dict, tid: str, title: str, ref: dict, skipped: str | None
) -> Table:
    have = [m for m in st.models if peaks.get(m) is not None]
    if skipped:
        return skipped_table(tid, title, f"needs peak memory: {skipped}", st.name)
    if len(have) < 2:
        return skipped_table(tid, title, "fewer than two models have a peak-memory figure: no gap to compute", st.name)
    cols = [model_col()] + [Column(f"vs_{b}", f"vs {b}", "GB; % of its peak") for b in have]
    t = Table(
        id=tid,
        title=title,
        study=st.name,
        columns=cols,
        caption=(
            f"Study {st.name}, at {cell_label(ref)}. Each cell compares the row model A with the column model B: "
            "the absolute gap A − B in GB (10⁹ bytes) and the percentage below (or above) B, whose denominator is "
            "B's peak: (B − A) / B × 100."
        ),
    )
    for a in have:
        cells = {"model": text_cell(a)}
        for b in have:
            if a == b:
                cells[f"vs_{b}"] = Cell(DASH, kind="text", note="same model")
                continue
            gap = peaks[a] - peaks[b]
            below = (peaks[b] - peaks[a]) / peaks[b] * 100.0 if peaks[b] else None
            word = "below" if gap < 0 else "above"
            text = f"{fmt_num(gap, 3)} GB, {fmt_pct(abs(below) if below is not None else None, signed=False)} {word}"
            if gap >= 0:
                text = "+" + text
            cells[f"vs_{b}"] = Cell(text, value=gap, raw={"gap_gb": gap, "pct_below": below})
        t.rows.append(Row(cells, key={"model": a}))
    return t


def energy_reference(data: ReportData) -> list[Table]:
    tid, title = "table-energy", "Energy at the reference cell"
    studies = data.studies("main_comparison")
    if not studies:
        return [skipped_table(tid, title, _no_study("main_comparison"))]
    out = []
    for i, st in enumerate(studies):
        ref = data.study_ref(st)
        base = data.baseline if data.baseline in st.models else (st.models[0] if st.models else None)
        metrics = [
            METRICS[k]
            for k in (
                "e2e_tps",
                "tokens_per_j",
                "j_per_1k_tokens",
                "j_per_1k_tokens_net",
                "avg_power_w",
                "energy_window_s",
            )
        ]
        deltas = [METRICS[k] for k in ("e2e_tps", "tokens_per_j", "j_per_1k_tokens")]
        cols = [model_col(), *[m.column() for m in metrics]]
        cols += [Column(f"d_{m.key}", f"Δ {m.label}", f"% vs {base}", None) for m in deltas]
        t = Table(
            id=_tid(tid, i),
            title=title,
            study=st.name,
            columns=cols,
            caption=(
                f"Study {st.name}, at {cell_label(ref)}. Energy = the GPU's total-energy counter (NVML) over a window "
                "of "
                "repeated full generates; J per 1000 tokens is gross (idle subtracted in its own column); tokens per "
                "joule "
                f"= 1000 / (J per 1000 tokens). Δ = relative difference to the baseline model {base}: (model / {base} "
                "− 1) × 100. "
                "↑ higher is better, ↓ lower is better: for J per 1000 tokens a negative Δ is an improvement."
            ),
        )
        used, rows = [], {}
        for m in st.models:
            r = data.ref_row(m, ref)
            used.append(r)
            rows[m] = r
        base_r = rows.get(base)
        for m in st.models:
            r = rows[m]
            cells = {"model": text_cell(m)} | {
                mt.key: metric_cell(r, mt, failed_text=(mt.key == "e2e_tps")) for mt in metrics
            }
            for mt in deltas:
                if m == base:
                    cells[f"d_{mt.key}"] = Cell("baseline", kind="baseline")
                else:
                    a = None if r is None or is_failed(r) else mt.value(r)
                    b = None if base_r is None or is_failed(base_r) else mt.value(base_r)
                    cells[f"d_{mt.key}"] = pct_cell(pct_change(a, b))
            t.rows.append(Row(cells, key={"model": m, **ref}, status=_status(r)))
        out.append(_finish(t, data, used, ["j_per_1k_tokens", "tokens_per_j"], "energy"))
    return out


def ape_reference(data: ReportData) -> list[Table]:
    tid, title = "table-ape", "Active Parameter Efficiency (APE) at the reference cell"
    studies = data.studies("main_comparison")
    if not studies:
        return [skipped_table(tid, title, _no_study("main_comparison"))]
    out = []
    for i, st in enumerate(studies):
        ref = data.study_ref(st)
        base = data.baseline if data.baseline in st.models else (st.models[0] if st.models else None)
        metrics = [ape_metric(c, s) for c, s in data.ape.items()]
        cols = [model_col(), METRICS["active_params_b"].column(label="active params")]
        cols += [Column(m.key, m.label, m.unit, m.better) for m in metrics]
        t = Table(
            id=_tid(tid, i),
            title=title,
            study=st.name,
            columns=cols,
            caption=(
                f"Study {st.name}, at {cell_label(ref)}. APE divides a figure by the parameters a token multiplies, in "
                f"billions (B), so mixture-of-experts and dense models share one scale. In brackets: the ratio to the "
                f"baseline model {base} (model ÷ {base}). "
                + " ".join(f"{m.label}: {'higher' if m.better == 'higher' else 'lower'} is better." for m in metrics)
            ),
        )
        used, rows = [], {m: data.ref_row(m, ref) for m in st.models}
        base_r = rows.get(base)
        for m in st.models:
            r = rows[m]
            used.append(r)
            cells = {
                "model": text_cell(m),
                "active_params_b": metric_cell(r, METRICS["active_params_b"], failed_text=True),
            }
            if r is not None and not is_failed(r) and cells["active_params_b"].value is not None:
                src = r.get("active_params_source")
                if src:
                    cells["active_params_b"].note = f"source: {src}"
            for mt in metrics:
                c = metric_cell(r, mt)
                if c.value is not None:
                    rt = num(r.get(f"ratio_to_baseline_{mt.key}"))
                    if rt is None and base_r is not None and not is_failed(base_r):
                        rt = ratio(mt.value(r), mt.value(base_r))
                    c.text = f"{c.text} ({fmt_ratio(rt)})" if rt is not None else c.text
                    c.note = (c.note + "; " if c.note else "") + (
                        f"ratio to {base}: {fmt_num(rt, 4)}" if rt is not None else f"no {base} figure to compare"
                    )
                t_cells = c
                cells[mt.key] = t_cells
            t.rows.append(Row(cells, key={"model": m, **ref}, status=_status(r)))
        out.append(_finish(t, data, used, [m.key for m in metrics]))
    return out


def _decoding_settings(r: dict | None, cfg: dict | None) -> str:
    src = cfg or r or {}
    if not src:
        return DASH
    if not src.get("do_sample"):
        return "greedy (argmax)"
    parts = []
    for key, label in (("temperature", "T"), ("top_p", "top-p"), ("top_k", "top-k")):
        v = num(src.get(key))
        if v is not None:
            parts.append(f"{label} {v:g}")
    return "sampling, " + ", ".join(parts) if parts else "sampling"


def decoding_ablation(data: ReportData) -> list[Table]:
    tid, title = "table-decoding", "Decoding-mode ablation"
    studies = data.studies("decoding_ablation")
    if not studies:
        return [skipped_table(tid, title, _no_study("decoding_ablation"))]
    out = []
    for i, st in enumerate(studies):
        ref = data.study_ref(st)
        anchor = "greedy" if "greedy" in st.decodings else st.decodings[0]
        metrics = [METRICS[k] for k in ("e2e_tps", "decode_tps", "ttft_ms", "itl_ms_p50")]
        cols = [model_col(), Column("decoding", "Decoding", align="l"), Column("settings", "Settings", align="l")]
        for m in metrics[:2]:
            cols += [m.column(), Column(f"d_{m.key}", f"Δ {m.label}", f"% vs {anchor}", None)]
        cols += [m.column() for m in metrics[2:]]
        t = Table(
            id=_tid(tid, i),
            title=title,
            study=st.name,
            columns=cols,
            caption=(
                f"Study {st.name}: every decoding mode at context {ref['context']} tokens, {ref['gen']} generated "
                "tokens, "
                f"{ref['dtype']}, {ref['backend']}. Δ = (mode / {anchor} − 1) × 100 for the same model. Exactly "
                f"{ref['gen']} "
                "tokens are generated in every mode (EOS cannot stop a run early), so the modes differ only in the "
                "cost of "
                "sampling. ↑ higher is better, ↓ lower is better."
            ),
        )
        used = []
        dec_cfg = data.config.get("decoding") or {}
        for m in st.models:
            anchor_r = data.row(m, ref["backend"], ref["dtype"], ref["context"], ref["gen"], anchor)
            for dec in st.decodings:
                r = data.row(m, ref["backend"], ref["dtype"], ref["context"], ref["gen"], dec)
                used.append(r)
                cells = {
                    "model": text_cell(m),
                    "decoding": text_cell(dec),
                    "settings": text_cell(_decoding_settings(r, dec_cfg.get(dec))),
                }
                for mt in metrics:
                    cells[mt.key] = metric_cell(r, mt, failed_text=(mt.key == "e2e_tps"))
                for mt in metrics[:2]:
                    if dec == anchor:
                        cells[f"d_{mt.key}"] = Cell("reference", kind="baseline")
                    else:
                        a = None if is_failed(anchor_r) or anchor_r is None else mt.value(anchor_r)
                        cells[f"d_{mt.key}"] = pct_cell(pct_change(cells[mt.key].value, a))
                t.rows.append(Row(cells, key={"model": m, "decoding": dec}, status=_status(r)))
        out.append(_finish(t, data, used, ["e2e_tps", "decode_tps"]))
    return out


def context_scaling(data: ReportData) -> list[Table]:
    tid, title = "table-context-scaling", "Context scaling"
    studies = data.studies("context_scaling")
    if not studies:
        return [skipped_table(tid, title, _no_study("context_scaling"))]
    out = []
    for i, st in enumerate(studies):
        ref = data.study_ref(st)
        first = st.contexts[0] if st.contexts else None
        metrics = [METRICS[k] for k in ("ttft_ms", "e2e_tps", "decode_tps", "peak_gb", "kv_gb", "j_per_1k_tokens")]
        cols = [model_col(), _AXIS_COL["context"]]
        for m in metrics:
            cols.append(m.column())
            if m.key in ("ttft_ms", "e2e_tps", "decode_tps"):
                cols.append(Column(f"d_{m.key}", f"Δ {m.label}", f"% vs {first}", None))
        t = Table(
            id=_tid(tid, i),
            title=title,
            study=st.name,
            columns=cols,
            caption=(
                f"Study {st.name}: {ref['gen']} generated tokens, {ref['decoding']}, {ref['dtype']}, {ref['backend']}. "
                f"Δ = (at this context / at {first} tokens − 1) × 100 for the same model. GB = 10⁹ bytes. "
                "↑ higher is better, ↓ lower is better."
            ),
        )
        used = []
        for m in st.models:
            r0 = data.row(m, ref["backend"], ref["dtype"], first, ref["gen"], ref["decoding"])
            for c in st.contexts:
                r = data.row(m, ref["backend"], ref["dtype"], c, ref["gen"], ref["decoding"])
                used.append(r)
                cells = {"model": text_cell(m), "context": Cell(str(c), value=c, raw=c)}
                for mt in metrics:
                    cells[mt.key] = metric_cell(r, mt, failed_text=(mt.key == "ttft_ms"))
                    if mt.key in ("ttft_ms", "e2e_tps", "decode_tps"):
                        if c == first:
                            cells[f"d_{mt.key}"] = Cell("reference", kind="baseline")
                        else:
                            a = None if r0 is None or is_failed(r0) else mt.value(r0)
                            cells[f"d_{mt.key}"] = pct_cell(pct_change(cells[mt.key].value, a))
                t.rows.append(Row(cells, key={"model": m, "context": c}, status=_status(r)))
        out.append(_finish(t, data, used, ["ttft_ms", "e2e_tps", "decode_tps"]))
    return out


def precision_sweep(data: ReportData) -> list[Table]:
    tid, title = "table-precision", "Precision sweep"
    studies = data.studies("precision_sweep")
    if not studies:
        return [skipped_table(tid, title, _no_study("precision_sweep"))]
    out = []
    for i, st in enumerate(studies):
        ref = data.study_ref(st)
        metrics = [METRICS[k] for k in ("ttft_ms", "e2e_tps", "decode_tps", "weights_gb", "peak_gb", "j_per_1k_tokens")]
        cols = [
            model_col(),
            Column("dtype", "dtype", align="l"),
            Column("status", "Status", align="l", wrap=True, width=0.2),
        ]
        cols += [m.column() for m in metrics]
        t = Table(
            id=_tid(tid, i),
            title=title,
            study=st.name,
            columns=cols,
            caption=(
                f"Study {st.name}: each dtype at context {ref['context']} tokens, {ref['gen']} generated tokens, "
                f"{ref['decoding']}, {ref['backend']}. A dtype the model or device cannot run is a failed cell: the "
                "status says \u201cfailed:\u201d and the reason. GB = 10⁹ bytes. ↑ higher is better, ↓ lower is better."
            ),
        )
        used = []
        for m in st.models:
            dts = []
            for d in st.dtypes:
                eff = data.dtype_for(m, d)
                if eff not in dts:
                    dts.append(eff)
            for d in dts:
                r = data.row(m, ref["backend"], d, ref["context"], ref["gen"], ref["decoding"])
                used.append(r)
                cells = {"model": text_cell(m), "dtype": text_cell(d), "status": status_cell(r)}
                cells |= {mt.key: metric_cell(r, mt) for mt in metrics}
                t.rows.append(Row(cells, key={"model": m, "dtype": d}, status=_status(r)))
        out.append(_finish(t, data, used, [m.key for m in metrics]))
        if not out[-1].skipped and any(is_failed(r) for r in used):
            out[-1].notes.insert(0, "A failed dtype is a result, not a crash: the model or the device refused it.")
    return out


def _compare_axis(data: ReportData, kind: str, axis: str, tid: str, title: str, intro: str) -> list[Table]:
    studies = data.studies(kind)
    if not studies:
        return [skipped_table(tid, title, _no_study(kind))]
    out = []
    for i, st in enumerate(studies):
        ref = data.study_ref(st)
        values = st.backends if axis == "backend" else [None]
        anchor = values[0]
        metrics = [
            METRICS[k]
            for k in (
                "ttft_ms",
                "e2e_tps",
                "decode_tps",
                "decode_cv",
                "itl_ms_p50",
                "peak_gb",
                "roofline_fraction",
                "compile_s",
            )
        ]
        cols = [model_col()]
        if axis == "backend":
            cols += [Column("backend", "Backend", align="l"), Column("cache", "Cache", align="l")]
        else:
            cols += [
                Column("experts", "Experts implementation", align="l"),
                Column("reads", "Experts read per token", align="l"),
            ]
        for m in metrics:
            cols.append(m.column())
            if m.key == "decode_tps" and axis == "backend":
                cols.append(Column("d_decode_tps", "Δ decode tok/s", f"% vs {anchor}", None))
        ctxs = st.contexts
        t = Table(
            id=_tid(tid, i),
            title=title,
            study=st.name,
            columns=cols,
            caption=(
                f"Study {st.name}: {intro} At {ref['gen']} generated tokens, {ref['decoding']}, {ref['dtype']}"
                + (f", context {ref['context']} tokens" if len(ctxs) <= 1 else "")
                + ". Decode CV = run-to-run standard deviation ÷ mean of decode tok/s. Roofline fraction = "
                "decode tok/s ÷ (measured memory bandwidth ÷ bytes read per token). "
                "↑ higher is better, ↓ lower is better."
            ),
        )
        if len(ctxs) > 1:
            cols.insert(1, _AXIS_COL["context"])
        used = []
        for m in st.models:
            for c in ctxs if len(ctxs) > 1 else [ref["context"]]:
                anchor_r = data.row(m, anchor or ref["backend"], ref["dtype"], c, ref["gen"], ref["decoding"])
                for v in values:
                    b = v or ref["backend"]
                    r = data.row(m, b, ref["dtype"], c, ref["gen"], ref["decoding"])
                    used.append(r)
                    cells = {"model": text_cell(m), "context": Cell(str(c), value=c, raw=c)}
                    if axis == "backend":
                        cells["backend"] = text_cell(b)
                        cells["cache"] = text_cell(None if r is None else r.get("cache_implementation"))
                    else:
                        cells["experts"] = text_cell(None if r is None else r.get("experts_implementation"))
                        cells["reads"] = text_cell(None if r is None else r.get("experts_read_per_token"))
                    cells |= {mt.key: metric_cell(r, mt, failed_text=(mt.key == "ttft_ms")) for mt in metrics}
                    if axis == "backend":
                        if b == anchor:
                            cells["d_decode_tps"] = Cell("reference", kind="baseline")
                        else:
                            a = (
                                None
                                if anchor_r is None or is_failed(anchor_r)
                                else METRICS["decode_tps"].value(anchor_r)
                            )
                            cells["d_decode_tps"] = pct_cell(pct_change(cells["decode_tps"].value, a))
                    t.rows.append(Row(cells, key={"model": m, "backend": b, "context": c}, status=_status(r)))
        out.append(_finish(t, data, used, ["ttft_ms", "e2e_tps", "decode_tps"]))
    return out


def backend_comparison(data: ReportData) -> list[Table]:
    return _compare_axis(
        data,
        "backend_comparison",
        "backend",
        "table-backend",
        "Backend comparison",
        "eager = generate(), dynamic cache, no compilation; compiled = generate(), static cache + torch.compile; "
        "compiled_loop = our loop of a compiled decode step with on-device sampling and no host sync per token "
        "(inter-token times from CUDA events). Compile time is spent in warm-up, not in the figures.",
    )


def experts_comparison(data: ReportData) -> list[Table]:
    return _compare_axis(
        data,
        "experts_comparison",
        "experts",
        "table-experts",
        "Experts-implementation comparison",
        "the same mixture-of-experts model with different experts implementations (which expert weights a decode step "
        "reads). Which one is the active-parameter figure? Every transformers path here reads only the experts the "
        "router picked for the token (eager loops over them, grouped_mm runs one grouped GEMM over them, batched_mm "
        "gathers each token's expert weights, which is why its memory grows with the prompt): each corresponds to the "
        "active count (3.6 B for gpt-oss-20b). A path that multiplied every expert would read the total instead.",
    )


GOVERNANCE_FIELDS = [
    ("display_name", "Name"),
    ("organization", "Organization"),
    ("architecture", "Architecture"),
    ("license", "License"),
    ("license_class", "License class"),
    ("usage_policy", "Usage policy"),
    ("safety_features", "Safety features"),
    ("model_card", "Model card"),
]


def governance(data: ReportData) -> list[Table]:
    """One column per model, one row per metadata field (reads better than 12 columns)."""
    tid, title = "table-governance", "Governance and licensing"
    models = list((data.config.get("models") or {}).keys()) or data.models
    if not models:
        return [skipped_table(tid, title, "the config names no models")]
    width = min(0.26, 0.78 / len(models))
    cols = [Column("field", "Field", align="l")] + [Column(m, m, align="l", wrap=True, width=width) for m in models]
    t = Table(
        id=tid,
        title=title,
        columns=cols,
        caption=(
            "From the models' metadata in the config (not verified by the benchmark) and the parameter counts measured "
            "on the model itself (active = parameters a token multiplies, input embedding excluded). B = 10⁹ "
            "parameters."
        ),
    )
    first_row = {}
    for m in models:
        rows = [r for r in data.ours if r.get("model") == m and not is_failed(r)]
        first_row[m] = rows[0] if rows else None

    def add(key, label, fn):
        cells = {"field": text_cell(label)}
        for m in models:
            cells[m] = fn(m)
        t.rows.append(Row(cells, key={"field": key}))

    def meta_cell(key):
        def fn(m):
            val = data.metadata(m).get(key)
            if isinstance(val, (list, tuple)):
                val = ", ".join(map(str, val))
            href = (
                val
                if key == "model_card" and isinstance(val, str) and val.startswith(("http://", "https://"))
                else None
            )
            return text_cell(val, note="not given in the config's metadata", href=href)

        return fn

    def weights(m):
        r = first_row[m]
        return text_cell((r or {}).get("weights_source") or data.model_cfg(m).get("source"))

    def params(key):
        def fn(m):
            r = first_row[m]
            return metric_cell(r, METRICS[key]) if r else Cell(DASH, kind="missing", note="no measured row")

        return fn

    add("weights_source", "Weights (random or pretrained)", weights)
    for k, lbl in GOVERNANCE_FIELDS:
        add(k, lbl, meta_cell(k))
    add("total_params_b", "Total parameters (B)", params("total_params_b"))
    add("active_params_b", "Active parameters (B)", params("active_params_b"))
    if not any(data.metadata(m) for m in models):
        t.notes.append("No model has metadata in the config (models.<name>.metadata): the governance rows are empty.")
    t.notes.append(f"{DASH} not given in the config's metadata, or no measured row for the parameter counts.")
    return [t]


# --------------------------------------------------------------------------------------------
# failures, environment, methodology, definitions, imported comparison
# --------------------------------------------------------------------------------------------


def failures(data: ReportData) -> list[Table]:
    tid, title = "table-failures", "Failed and invalid cells"
    cols = [
        Column("cell_id", "Cell", align="l", wrap=True, width=0.30),
        Column("status", "Status", align="l"),
        Column("kind", "Kind", align="l"),
        Column("reason", "Reason", align="l", wrap=True, width=0.42),
    ]
    t = Table(
        id=tid,
        title=title,
        columns=cols,
        long=True,
        caption=(
            "Every cell of ours that failed (an expected failure such as out-of-memory, an unsupported dtype or a "
            "context over the model's limit), failed a validity check (e.g. the measured prompt length differs from "
            "the "
            "requested one), or that a study asks for but has no row in the data."
        ),
    )
    for r in sorted(data.ours, key=lambda r: str(r.get("cell_id"))):
        if is_failed(r):
            t.rows.append(
                Row(
                    {
                        "cell_id": text_cell(r.get("cell_id") or "/".join(map(str, row_key(r)))),
                        "status": Cell("failed", kind="failed"),
                        "kind": text_cell(r.get("failure_kind") or "error"),
                        "reason": text_cell(short(r.get("error") or "no error text recorded", 300)),
                    },
                    key={"cell_id": r.get("cell_id")},
                    status="failed",
                )
            )
        elif is_invalid(r):
            reasons = "; ".join(map(str, _as_list(r.get("invalid_reasons")))) or "no reason recorded"
            t.rows.append(
                Row(
                    {
                        "cell_id": text_cell(r.get("cell_id")),
                        "status": Cell("invalid", kind="invalid"),
                        "kind": text_cell("validity check"),
                        "reason": text_cell(short(reasons, 300)),
                    },
                    key={"cell_id": r.get("cell_id")},
                    status="invalid",
                )
            )
    missing = []
    for st in data.studies():
        for m in st.models:
            for b in st.backends:
                for d in st.dtypes:
                    for c in st.contexts:
                        for g in st.gens:
                            for dec in st.decodings:
                                if data.row(m, b, d, c, g, dec) is None:
                                    cid = f"{m}/{b}-{data.dtype_for(m, d)}/c{c}-g{g}-{dec}"
                                    if cid not in missing:
                                        missing.append(cid)
    for cid in missing:
        t.rows.append(
            Row(
                {
                    "cell_id": text_cell(cid),
                    "status": Cell("missing", kind="missing"),
                    "kind": text_cell("no row"),
                    "reason": text_cell(
                        "a study asks for this cell but the data has no row for it (not run yet, or its result file is "
                        "absent)"
                    ),
                },
                key={"cell_id": cid},
                status="missing",
            )
        )
    if not t.rows:
        t.skipped = (
            f"none: all {len(data.ours)} cells of ours ran, passed every validity check and every study cell has a row"
        )
    return [t]


ENV_FIELDS = [
    ("device", "Device kind"),
    ("device_name", "Device"),
    ("driver_version", "NVIDIA driver"),
    ("cuda_version", "CUDA (torch build)"),
    ("torch_version", "torch"),
    ("transformers_version", "transformers"),
    ("python_version", "Python"),
    ("hostname", "Host"),
    ("mem_bandwidth_bytes_per_s", "Measured memory bandwidth (GB/s)"),
]
_MACHINE_KEYS = (
    "device",
    "device_name",
    "device_uuid",
    "driver_version",
    "cuda_version",
    "torch_version",
    "transformers_version",
    "python_version",
    "hostname",
)


def machines(data: ReportData) -> list[dict]:
    """Distinct machines (environment tuples) in the data, ours first, with the rows on each."""
    groups: dict[tuple, dict] = {}
    for r in data.ours + data.imported:
        key = tuple(r.get(k) for k in _MACHINE_KEYS)
        if all(v is None for v in key):
            key = ("unknown",) + key[1:]
        g = groups.setdefault(key, {"fields": dict(zip(_MACHINE_KEYS, key)), "rows": [], "sources": set(), "bw": []})
        g["rows"].append(r)
        g["sources"].add(r.get("source") or OURS)
        bw = num(r.get("mem_bandwidth_bytes_per_s"))
        if bw is not None:
            g["bw"].append(bw)
    return list(groups.values())


def environment(data: ReportData) -> list[Table]:
    tid, title = "table-environment", "Environment of every machine in the data"
    ms = machines(data)
    if not ms:
        return [skipped_table(tid, title, "the data has no rows")]
    cols = [Column("field", "Field", align="l")] + [
        Column(f"m{i}", f"Machine {i + 1}", align="l", wrap=True, width=min(0.5, 0.66 / len(ms)))
        for i in range(len(ms))
    ]
    t = Table(
        id=tid,
        title=title,
        columns=cols,
        caption=(
            "One column per distinct environment (device, driver, library versions, host) found in the rows. Figures "
            "from "
            "different machines should not be compared directly: eager decode on the host CPU moved by up to 2× "
            "between "
            "machines of the same GPU model."
        ),
    )
    for key, label in ENV_FIELDS:
        cells = {"field": text_cell(label)}
        for i, g in enumerate(ms):
            if key == "mem_bandwidth_bytes_per_s":
                bw = g["bw"]
                cells[f"m{i}"] = (
                    Cell(fmt_num(sum(bw) / len(bw) / 1e9, 4), value=sum(bw) / len(bw) / 1e9)
                    if bw
                    else Cell(DASH, kind="missing", note="not measured")
                )
            else:
                cells[f"m{i}"] = text_cell(g["fields"].get(key))
        t.rows.append(Row(cells, key={"field": key}))
    extra = {
        "sources": ("Source of the rows", lambda g: ", ".join(sorted(g["sources"]))),
        "cells": ("Rows", lambda g: str(len(g["rows"]))),
        "models": ("Models", lambda g: ", ".join(sorted({str(r.get("model")) for r in g["rows"]}))),
        "started": ("Measured (UTC)", lambda g: _date_range([r.get("started_at") for r in g["rows"]])),
    }
    for key, (label, fn) in extra.items():
        cells = {"field": text_cell(label)} | {f"m{i}": text_cell(fn(g)) for i, g in enumerate(ms)}
        t.rows.append(Row(cells, key={"field": key}))
    t.notes.append(f"{DASH} not recorded in the rows (imported rows carry only what the study stated).")
    return [t]


def _date_range(values) -> str | None:
    vals = sorted(str(v) for v in values if v)
    if not vals:
        return None
    return vals[0] if vals[0] == vals[-1] else f"{vals[0]} to {vals[-1]}"


def _distinct(rows: list[dict], col: str) -> list:
    out = []
    for r in rows:
        v = r.get(col)
        if isinstance(v, list):
            v = tuple(v)
        if v is not None and v not in out:
            out.append(v)
    return out


def _join(vals, fmt=str) -> str | None:
    vals = [fmt(v) for v in vals]
    return ", ".join(vals) if vals else None


def _span(vals: list[float], unit: str) -> str | None:
    if not vals:
        return None
    lo, hi = fmt_num(min(vals), 3), fmt_num(max(vals), 3)
    return f"{lo} {unit}" if lo == hi else f"{lo} to {hi} {unit}"


def methodology(data: ReportData) -> list[Table]:
    tid, title = "table-methodology", "How the figures were measured"
    ok = [r for r in data.ours if not is_failed(r)]
    if not data.ours:
        return [skipped_table(tid, title, "the data has no rows of ours")]
    cfg_meas = data.config.get("measurement") or {}
    t = Table(
        id=tid,
        title=title,
        columns=[Column("item", "Item", align="l"), Column("value", "Value", align="l", wrap=True, width=0.62)],
        caption=(
            "Read from the rows of ours (and from the config where the rows do not say). "
            "Several values mean the cells differ."
        ),
    )

    def add(item, value, note=None):
        t.rows.append(
            Row(
                {"item": text_cell(item), "value": text_cell(value, note=note or "not recorded in the rows")},
                key={"item": item},
            )
        )

    n_ok, n_failed = len(ok), sum(1 for r in data.ours if is_failed(r))
    n_invalid = sum(1 for r in data.ours if is_invalid(r))
    add(
        "Cells",
        f"{len(data.ours)} of ours ({n_ok} ran, {n_failed} failed, {n_invalid} invalid); {len(data.imported)} "
        "imported rows",
    )
    add(
        "Measured runs per figure (N)",
        _join(_distinct(ok, "n_runs"), fmt_int) or _join([cfg_meas.get("n_runs")] if cfg_meas.get("n_runs") else []),
    )
    add(
        "Warm-up runs (discarded, full shape)",
        _join(_distinct(ok, "warmup_runs"), fmt_int)
        or _join([cfg_meas.get("warmup_runs")] if cfg_meas.get("warmup_runs") is not None else []),
    )
    add("Percentile method", _join(_distinct(ok, "percentile_method")))
    add(
        "TTFT",
        "median wall time of N generate calls with one new token (prefill included), synchronized monotonic clock",
    )
    add("Generated tokens", "exactly gen tokens every run (EOS cannot stop a run early); checked on every run")
    add("Prompt mode", _join(_distinct(ok, "prompt_mode")))
    add(
        "Weights source",
        _join(
            [
                f"{m}: {s}"
                for m in data.models
                for s in _distinct([r for r in data.ours if r.get("model") == m], "weights_source")
            ]
        ),
    )
    add(
        "Model reference",
        _join(
            [
                f"{m}: {s}"
                for m in data.models
                for s in _distinct([r for r in data.ours if r.get("model") == m], "model_ref")
            ]
        ),
    )
    add("Attention implementation", _join(_distinct(ok, "attn_implementation")))
    add(
        "Experts implementation (MoE)",
        _join(
            [
                f"{m}: {s}"
                for m in data.models
                for s in _distinct([r for r in ok if r.get("model") == m], "experts_implementation")
            ]
        ),
    )
    add("KV cache", _join(_distinct(ok, "cache_implementation")))
    add("Energy source", _join(_distinct(ok, "energy_source"), lambda s: short(s, 120)))
    wins = [num(r.get("energy_window_s")) for r in ok if num(r.get("energy_window_s")) is not None]
    add(
        "Energy window",
        (
            f"{_span(wins, 's')} (full generates repeated until the window reaches measurement.min_energy_window_s)"
            if wins
            else None
        ),
        note="no energy window: energy not measured",
    )
    idle = [num(r.get("idle_power_w")) for r in ok if num(r.get("idle_power_w")) is not None]
    add("Idle power (after cool-down, before the cell)", _span(idle, "W"), note="not measured")
    mem_null = _join(_distinct(ok, "memory_null_reason"))
    add(
        "Memory",
        f"allocator figures not recorded: {mem_null}"
        if mem_null
        else "torch.cuda peak statistics reset after warm-up; the measured decode runs with the KV cache alive",
    )
    add("Seed", _join(_distinct(ok, "seed"), lambda v: str(_int(v))))
    add("Harness version", _join(_distinct(data.ours, "harness_version")))
    add("Result schema version", _join(_distinct(data.ours, "schema_version")))
    ref = data.reference()
    add("Reference cell", cell_label(ref) if ref else None, note="no study in the config")
    add("Baseline model", (data.baseline or DASH) + (f" ({data.baseline_note})" if data.baseline_note else ""))
    return [t]


# Our name, unit, definition, the study's, vLLM's, MLPerf's and AIPerf's names.
DEFINITIONS = [
    (
        "ttft_ms",
        "ms",
        "Median wall time of a generate call with one new token, prefill included (N samples).",
        "TTFT_ms / ttft_ms",
        "TTFT",
        "TTFT",
        "Time to First Token",
    ),
    (
        "e2e_ms_p50 / _p95 / _p99",
        "ms",
        "Percentiles of the wall time of a full generate of gen tokens over N runs (method in Methodology).",
        "p50_ms / p95_ms / p99_ms (p95 = p99 = maximum of 10 runs)",
        "E2EL",
        DASH,
        "Request Latency",
    ),
    (
        "e2e_tps",
        "tok/s",
        "gen / (e2e_ms_p50 / 1000): end-to-end tokens per second, prefill included.",
        "\u201cTPOT (tok/s)\u201d (TPOT_tokps)",
        DASH,
        DASH,
        DASH,
    ),
    (
        "decode_tps",
        "tok/s",
        "(gen − 1) / (t_last − t_first): decode-only tokens per second, median over runs.",
        DASH,
        "1000 / TPOT",
        "1000 / TPOT",
        "Output Token Throughput Per User (≈)",
    ),
    (
        "tpot_ms",
        "ms/token",
        "1000 / decode_tps: time per output token after the first.",
        DASH + " (its \u201cTPOT\u201d is e2e_tps)",
        "TPOT",
        "TPOT",
        "Inter Token Latency (per-request mean)",
    ),
    (
        "itl_ms_p50 / _p95 / _p99",
        "ms",
        "Percentiles of every gap between consecutive generated tokens, all runs pooled.",
        DASH,
        "ITL",
        DASH,
        "Inter Token Latency (AIPerf averages it per request; per gap: Inter Chunk Latency)",
    ),
    (
        "peak_allocated_bytes",
        "GB (10⁹ B)",
        "torch.cuda.max_memory_allocated during the measured decode, KV cache alive; reset after warm-up.",
        "peak_alloc_mb (MiB, 2²⁰ B)",
        DASH,
        DASH,
        DASH,
    ),
    (
        "weights_bytes",
        "GB",
        "Allocated bytes after the model is loaded.",
        "baseline_alloc_mb (MiB)",
        DASH,
        DASH,
        DASH,
    ),
    (
        "kv_cache_bytes",
        "GB",
        "Bytes of the cache tensors the generate returns; checked against the analytic size from the architecture.",
        "kv_cache_alloc_mb (peak − post-tokenize allocation: mostly activations, not the KV cache)",
        DASH,
        DASH,
        DASH,
    ),
    (
        "j_per_1k_tokens",
        "J per 1000 tok",
        "GPU energy (NVML total-energy counter) over a window of at least a few seconds, per 1000 generated tokens; "
        "gross (_net: idle power subtracted).",
        "energy_per_1k_decoded_tokens_joules (two nvidia-smi power readings × time)",
        DASH,
        DASH,
        DASH,
    ),
    (
        "tokens_per_j",
        "tok/J",
        "1000 / j_per_1k_tokens.",
        "tokens_per_watt (a tokens-per-joule figure)",
        DASH,
        DASH,
        DASH,
    ),
    (
        "ape_e2e_tps_per_active_b",
        "tok/s per B",
        "e2e_tps / active parameters in billions. Higher is better.",
        "throughput_per_activeB_tokps_per_B",
        DASH,
        DASH,
        DASH,
    ),
    (
        "ape_decode_tps_per_active_b",
        "tok/s per B",
        "decode_tps / active parameters in billions. Higher is better.",
        DASH,
        DASH,
        DASH,
        DASH,
    ),
    (
        "ape_inv_ttft_per_s_per_active_b",
        "1/s per B",
        "(1000 / ttft_ms) / active parameters in billions. Higher is better.",
        "inv_ttft_per_activeB_tokps_per_B",
        DASH,
        DASH,
        DASH,
    ),
    (
        "ape_tokens_per_j_per_active_b",
        "tok/J per B",
        "tokens_per_j / active parameters in billions. Higher is better.",
        "tokens_per_watt_per_activeB",
        DASH,
        DASH,
        DASH,
    ),
    (
        "e2e_tps_per_peak_gb",
        "tok/s per GB",
        "e2e_tps / peak allocated GB. Higher is better.",
        "tokens_per_GB_tokps_per_GB",
        DASH,
        DASH,
        DASH,
    ),
    (
        "roofline_fraction",
        "% of bound",
        "decode_tps × bytes read per decode step (weights read + KV at this context) / measured memory bandwidth. "
        "Batch-1 decode is memory-bound, so 100% is the ceiling.",
        DASH,
        DASH,
        DASH,
        DASH,
    ),
]


def definitions(data: ReportData | None = None) -> list[Table]:
    cols = [
        Column("name", "Our column", align="l", wrap=True, width=0.15),
        Column("unit", "Unit", align="l", wrap=True, width=0.07),
        Column("definition", "Definition", align="l", wrap=True, width=0.25),
        Column("study", "arXiv 2508.16700", align="l", wrap=True, width=0.15),
        Column("vllm", "vLLM bench", align="l", wrap=True, width=0.07),
        Column("mlperf", "MLPerf Inference", align="l", wrap=True, width=0.07),
        Column("aiperf", "AIPerf", align="l", wrap=True, width=0.12),
    ]
    t = Table(
        id="table-definitions",
        title="Metric definitions and their names elsewhere",
        columns=cols,
        long=True,
        caption=(
            "Our column names (their unit is part of the name) and the names the same quantity has in the study we "
            "reproduce, in vLLM's benchmark, in MLPerf Inference and in NVIDIA AIPerf. "
            f"{DASH} = no equivalent. Beware: the study's \u201cTPOT\u201d is end-to-end tokens per second (our "
            "e2e_tps), "
            "while vLLM's and MLPerf's TPOT is milliseconds per output token after the first (our tpot_ms)."
        ),
    )
    for name, unit, definition, study, vllm, mlperf, aiperf in DEFINITIONS:
        cells = {
            "name": Cell(name, kind="text", raw=name),
            "unit": text_cell(unit),
            "definition": text_cell(definition),
            "study": text_cell(study),
            "vllm": text_cell(vllm),
            "mlperf": text_cell(mlperf),
            "aiperf": text_cell(aiperf),
        }
        t.rows.append(Row(cells, key={"name": name}))
    return [t]


COMPARE_METRICS = ["ttft_ms", "e2e_tps", "decode_tps", "peak_gb", "weights_gb", "j_per_1k_tokens"]


def _match_ours(data: ReportData, imp: dict) -> dict | None:
    """Our row for an imported cell: same model, context, gen, decoding, dtype; prefer the reference backend."""
    ref_backend = (data.ref or {}).get("backend", "eager")
    cands = [
        r
        for r in data.ours
        if r.get("model") == imp.get("model")
        and _int(r.get("context_tokens")) == _int(imp.get("context_tokens"))
        and _int(r.get("gen_tokens")) == _int(imp.get("gen_tokens"))
        and r.get("decoding") == imp.get("decoding")
        and r.get("dtype") == imp.get("dtype")
    ]
    if not cands:
        return None
    cands.sort(key=lambda r: (r.get("backend") != imp.get("backend", ref_backend), is_failed(r)))
    return cands[0]


def imported_comparison(data: ReportData) -> list[Table]:
    """One small table per metric: our figure and the study's at each matching cell, and the ratio."""
    tid, title = "table-imported", "Our figures beside the study's imported figures"
    if not data.imported:
        return [
            skipped_table(
                tid,
                title,
                "the data has no imported rows (analysis.external_tables is empty, or its import produced no rows)",
            )
        ]
    sources = sorted({r.get("source") for r in data.imported})
    pairs = []
    for imp in sorted(
        data.imported,
        key=lambda r: (str(r.get("model")), _int(r.get("context_tokens")) or 0, _int(r.get("gen_tokens")) or 0),
    ):
        ours = _match_ours(data, imp)
        if ours is not None and not is_failed(ours) and not is_failed(imp):
            pairs.append((imp, ours))
    out = []
    for mk in COMPARE_METRICS:
        mt = METRICS[mk]
        t = Table(
            id=f"{tid}-{mk.replace('_', '-')}",
            title=f"Beside the study: {mt.label}",
            compact=True,
            columns=[
                model_col(),
                Column("cell", "Context/gen", "tokens", align="l"),
                Column("ours", "Ours", mt.unit, mt.better),
                Column("theirs", "Study", mt.unit, mt.better),
                Column("ratio", "Ours ÷ study", "×"),
            ],
            caption=f"{mt.label} ({mt.unit}) at every cell both have.",
        )
        for imp, ours in pairs:
            a, b = mt.value(ours), mt.value(imp)
            if a is None or b is None:
                continue
            t.rows.append(
                Row(
                    {
                        "model": text_cell(imp.get("model")),
                        "cell": text_cell(f"{_int(imp.get('context_tokens'))}/{_int(imp.get('gen_tokens'))}"),
                        "ours": metric_cell(ours, mt),
                        "theirs": Cell(mt.fmt(b), value=b, raw=mt.raw(imp)),
                        "ratio": Cell(fmt_ratio(a / b) if b else DASH, value=(a / b) if b else None),
                    },
                    key={
                        "model": imp.get("model"),
                        "context": _int(imp.get("context_tokens")),
                        "gen": _int(imp.get("gen_tokens")),
                        "metric": mk,
                    },
                )
            )
        if t.rows:
            out.append(t)
    if not out:
        models_imp = sorted({str(r.get("model")) for r in data.imported})
        return [
            skipped_table(
                tid,
                title,
                f"no cell of ours matches an imported cell (imported models: {', '.join(models_imp)}; ours: "
                f"{', '.join(data.models) or 'none'}); match them through model_map in analysis.external_tables",
            )
        ]
    out[0].notes.append(
        f"Imported rows ({', '.join(sources)}) are matched to ours on model, context, generated tokens, decoding and "
        "dtype. "
        "The study measured pretrained weights on one H100 NVL with its own method; our rows say which weights and "
        "device "
        "they used (see Environment). Read the ratios with that in mind."
    )
    return out


def imported_tpot(data: ReportData) -> list[Table]:
    tid, title = "table-tpot-check", "TPOT-artifact check of the imported figures"
    rows = [r for r in data.imported if r.get("tpot_check") or r.get("tpot_artifact") is not None]
    if not data.imported:
        return [skipped_table(tid, title, "the data has no imported rows")]
    if not rows:
        return [skipped_table(tid, title, "the imported rows carry no TPOT check (tpot_check column absent)")]
    cols = [
        model_col(),
        Column("cell", "Context/gen", "tokens", align="l"),
        Column("decoding", "Decoding", align="l"),
        Column("dtype", "dtype", align="l"),
        Column("raw", "e2e tok/s as imported", "tok/s"),
        Column("kept", "e2e tok/s kept", "tok/s"),
        Column("inv_ttft", "1000 / TTFT", "1/s"),
        Column("flag", "Artifact", align="l"),
        Column("check", "Check", align="l", wrap=True, width=0.2),
    ]
    t = Table(
        id=tid,
        title=title,
        columns=cols,
        long=True,
        caption=(
            "A tok/s figure within 3% of 1000 / TTFT is an artifact of an older pipeline; it is recomputed from the "
            "decode "
            "wall time (gen / p50 seconds). The raw figure is kept beside the corrected one."
        ),
    )
    n_flag = 0
    for r in sorted(
        rows,
        key=lambda r: (
            str(r.get("model")),
            _int(r.get("context_tokens")) or 0,
            str(r.get("decoding")),
            str(r.get("dtype")),
        ),
    ):
        flag = r.get("tpot_artifact") is True
        n_flag += flag
        raw = num(r.get("e2e_tps_raw"))
        if raw is None:
            raw = num(r.get("e2e_tps"))
        ttft = num(r.get("ttft_ms"))
        ctx = _int(r.get("context_tokens"))
        cells = {
            "model": text_cell(r.get("model")),
            "cell": text_cell(f"{ctx if ctx is not None else 'unknown'}/{_int(r.get('gen_tokens'))}"),
            "decoding": text_cell(r.get("decoding")),
            "dtype": text_cell(r.get("dtype")),
            "raw": Cell(fmt_num(raw), value=raw, raw=raw, kind="num" if raw is not None else "missing"),
            "kept": metric_cell(r, METRICS["e2e_tps"], failed_text=True),
            "inv_ttft": Cell(
                fmt_num(1000.0 / ttft) if ttft else DASH,
                value=1000.0 / ttft if ttft else None,
                kind="num" if ttft else "missing",
            ),
            "flag": Cell("yes" if flag else "no", kind="text", raw=flag),
            "check": text_cell(short(r.get("tpot_check"), 200) if r.get("tpot_check") else None),
        }
        t.rows.append(
            Row(
                cells,
                key={"model": r.get("model"), "context": ctx, "decoding": r.get("decoding"), "dtype": r.get("dtype")},
            )
        )
    t.notes.append(f"{n_flag} of {len(rows)} imported rows were flagged and corrected.")
    return [t]


def imported_notes(data: ReportData, limit: int = 12) -> list[str]:
    """Caveats the importer attached to more than one imported row (the general ones), most frequent first."""
    counts: dict[str, int] = {}
    for r in data.imported:
        for n in _as_list(r.get("notes")):
            counts[str(n)] = counts.get(str(n), 0) + 1
    common = sorted((n for n, c in counts.items() if c > 1), key=lambda n: (-counts[n], n))
    return [f"{n} ({counts[n]} rows)" for n in common[:limit]]
