"""The study tables, declared as data: one spec per table, all built by `builder.build`.

A spec names the study kind it renders, the metrics (catalogue names), how rows and columns are
laid out, and which metrics get a change column against an anchor. Every axis a spec does not
lay out is held at the study's reference cell. Captions are `tables.<id>` in captions.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploybench.enums import Stage, StudyKind
from deploybench.report.quantities import REST
from deploybench.results import metrics


@dataclass(frozen=True)
class TableSpec:
    id: str
    title: str
    kind: StudyKind
    metrics: tuple[str, ...]
    # Axes iterated for the rows, in order. "axis?" is iterated over the study's values but shown
    # as a column only where the study has more than one; "metric?" lays the metrics out as rows.
    rows: tuple[str, ...] = ("model",)
    pivot: str | None = None  # an axis whose values become columns
    pivot_ends: bool = False  # only the pivot's first and last value
    change: tuple[str, ...] = ()  # metrics followed by a change column: (value / anchor's − 1) × 100
    # Where the anchor of the change lies: "model" (the baseline model), "entry" (the study's first model
    # entry), "decoding" (greedy), "context" / "backend" (the study's first value), "pivot" (the pivot's
    # first value). With a pivot, every pivot value has its change column, unless the anchor is "pivot".
    anchor: str | None = None
    text: tuple[str, ...] = ()  # text columns after the row axes: "settings", "status", or a row field
    ratios: bool = False  # each figure followed by its ratio to the baseline model, in brackets
    needs: tuple[str, ...] = ()  # the metrics whose absence skips the table (default: all of them)
    missing: str = ""  # the figure family that explains an absence: energy | memory
    layout: str = "grid"  # grid | gap (pairwise differences of the one metric between models)


MAIN = StudyKind.MAIN_COMPARISON
BY_CONTEXT = ("model", "gen?", "decoding?", "dtype?", "backend?", "metric?")
APE = tuple(m.name for m in metrics.of_stage(Stage.APE))
# Beside every decode figure: what paces the step, with its evidence (busy fraction, runs host-paced, the roof
# reached: pacing.py; README, "How far to trust each kind of figure"); the two bandwidth bounds.
BOUND = ("bound_by",)
ROOFLINE = ("roofline_fraction", "roofline_fraction_gemv")
LATENCY = ("ttft_ms", "e2e_ms_p50", "e2e_ms_p95", "e2e_tps", "decode_tps", "decode_tps_cv", "tpot_ms")
SPEED = ("ttft_ms", "e2e_tps", "decode_tps")
COMPARED = (*SPEED, *BOUND, "roofline_fraction", "peak_allocated_bytes", "compile_s")
MEMORY = ("weights_bytes", "kv_cache_bytes", "kv_cache_bytes_analytic", REST.name, "peak_allocated_bytes")
ENERGY = ("e2e_tps", "tokens_per_j", "j_per_1k_tokens", "j_per_1k_tokens_net", "j_per_prompt_token")
ENERGY += ("j_per_decode_token", "avg_power_w", "energy_window_s")
# At each batch size: the aggregate and per-sequence speeds, the step and what bounds it, memory and energy of the
# whole batch, and for MoE models the experts a step reads beside what uniform routing predicts.
BATCH = ("decode_tps", "decode_tps_per_seq", "tpot_ms", *BOUND, "peak_allocated_bytes", "kv_cache_bytes")
BATCH += ("j_per_1k_tokens", "roofline_fraction", "experts_touched_per_layer", "experts_touched_uniform_prediction")

# fmt: off
SPECS = (
    TableSpec("table-latency-ref", "Latency and throughput at the reference cell", MAIN,
              (*LATENCY, *BOUND, *ROOFLINE), text=("runs",), needs=LATENCY),
    TableSpec("table-tps-context", "Throughput against context", MAIN, ("e2e_tps", "decode_tps", *BOUND),
              rows=BY_CONTEXT, pivot="context"),
    TableSpec("table-ttft-context", "TTFT against context", MAIN, ("ttft_ms",), rows=BY_CONTEXT, pivot="context"),
    TableSpec("table-tps-change", "Change in throughput from the shortest to the longest context", MAIN,
              ("e2e_tps", "decode_tps", *BOUND), pivot="context", pivot_ends=True, change=("e2e_tps", "decode_tps"),
              anchor="pivot", needs=("e2e_tps",)),
    TableSpec("table-memory", "Peak memory at the reference cell", MAIN, (*MEMORY, "peak_reserved_bytes"),
              needs=("peak_allocated_bytes",), missing="memory"),
    TableSpec("table-memory-gap", "Peak-memory gap between models", MAIN, ("peak_allocated_bytes",),
              missing="memory", layout="gap"),
    TableSpec("table-energy", "Energy at the reference cell", MAIN, ENERGY,
              change=("e2e_tps", "tokens_per_j", "j_per_1k_tokens"), anchor="model",
              needs=("j_per_1k_tokens", "tokens_per_j"), missing="energy"),
    TableSpec("table-energy-context", "Energy per 1000 tokens against context", MAIN, ("j_per_1k_tokens",),
              rows=BY_CONTEXT, pivot="context", missing="energy"),
    TableSpec("table-ape", "Active Parameter Efficiency (APE) at the reference cell", MAIN,
              ("active_params", *APE, *BOUND), ratios=True, needs=APE),
    TableSpec("table-decoding", "Decoding-mode ablation", StudyKind.DECODING_ABLATION,
              ("e2e_tps", "decode_tps", "ttft_ms", "itl_ms_p50", *BOUND), rows=("model", "decoding"),
              text=("settings",), change=("e2e_tps", "decode_tps"), anchor="decoding", needs=("e2e_tps", "decode_tps")),
    TableSpec("table-context-scaling", "Context scaling", StudyKind.CONTEXT_SCALING,
              (*SPEED, *BOUND, "peak_allocated_bytes", "kv_cache_bytes", "j_per_1k_tokens"), rows=("model", "context"),
              change=SPEED, anchor="context", needs=SPEED),
    TableSpec("table-precision", "Precision sweep", StudyKind.PRECISION_SWEEP,
              (*SPEED, *BOUND, "weights_bytes", "peak_allocated_bytes", "j_per_1k_tokens"), rows=("model", "dtype"),
              text=("status",)),
    TableSpec("table-backend", "Backend comparison", StudyKind.BACKEND_COMPARISON, COMPARED,
              rows=("model", "context?", "backend"), text=("cache_implementation",), change=("decode_tps",),
              anchor="backend", needs=SPEED),
    TableSpec("table-experts", "Experts-implementation comparison", StudyKind.EXPERTS_COMPARISON,
              ("params_read_per_token", *COMPARED), rows=("model", "context?"),
              text=("experts_implementation", "experts_read_per_token"), needs=SPEED),
    TableSpec("table-attention", "Attention-implementation comparison", StudyKind.ATTENTION_COMPARISON,
              ("ttft_ms", "decode_tps", *BOUND), text=("attn_implementation",), pivot="context",
              change=("ttft_ms", "decode_tps"), anchor="entry", needs=("ttft_ms", "decode_tps")),
    TableSpec("table-batch", "Batch scaling", StudyKind.BATCH_SCALING, BATCH,
              rows=("model", "backend?", "context?", "gen?", "batch"), text=("max_batch_fit",), needs=("decode_tps",)),
)
# fmt: on
BY_ID = {spec.id: spec for spec in SPECS}
