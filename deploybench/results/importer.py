"""Schema normalisation: map external result tables onto the deploybench result schema.

A format is a function `(spec, folder) -> rows` registered in FORMATS; `import_table` runs it and
stamps the rows. Rows are plain dicts that `deploybench.results.schema.to_table` accepts. Every figure goes
into the column whose *definition* it matches (not the one whose name looks alike), and every
caveat of how it was made goes into `notes`, so the report can show it next to the figure.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from deploybench.enums import (
    Backend,
    Device,
    DType,
    ExpertsImplementation,
    ExpertsRead,
    FailureKind,
    PromptMode,
    Status,
    WeightsSource,
)
from deploybench.plan.naming import cell_id
from deploybench.plan.spec import STANDARD_DECODING, canonical_json
from deploybench.results.schema import SCHEMA_VERSION, to_table
from deploybench.results.values import is_missing

MIB = 2**20  # torch.cuda memory stats divided by 1024*1024: the study's "MB" is MiB


class ImportFormatError(ValueError):
    """An external table this importer cannot map: unknown format, file or columns."""


FORMATS: dict[str, Callable[[dict, Path], list[dict]]] = {}


def register_format(name: str):
    def wrap(fn):
        FORMATS[name] = fn
        return fn

    return wrap


def import_table(spec: dict, root) -> list[dict]:
    """Rows in our schema for one `analysis.external_tables` entry {name, format, path, model_map}."""
    missing = [k for k in ("name", "format", "path") if not spec.get(k)]
    if missing:
        raise ImportFormatError(f"external table spec {spec!r} lacks {missing}")
    name, fmt = spec["name"], spec["format"]
    if fmt not in FORMATS:
        raise ImportFormatError(f"external table {name!r}: unknown format {fmt!r}; known formats: {sorted(FORMATS)}")
    folder = Path(root) / spec["path"]
    if not folder.exists():
        raise FileNotFoundError(f"external table {name!r}: {folder} does not exist")
    rows = FORMATS[fmt](spec, folder)
    for row in rows:
        row["source"] = f"import:{name}"
        row["schema_version"] = SCHEMA_VERSION
    to_table(rows)  # fail here, naming the column, rather than in consolidate
    return rows


# Columns of the imported tables that hold text; every other column holds numbers.
TEXT_COLUMNS = frozenset(
    {"model", "model_type", "device", "device_name", "decoding_method", "precision", "error", "throughput_scope"}
    | {"model_id", "model_name", "architecture", "organization"}
)


def check_csv_complete(path: Path, text_columns=TEXT_COLUMNS) -> None:
    """Refuse a CSV that does not parse completely, naming the file, the line and the column: a malformed line,
    a line with fewer or more fields than the header (a truncated last line), a last line without its newline
    (cut mid-value), a value that is not a number in a numeric column (empty is allowed: a missing figure)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{path}: not UTF-8 text ({exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if not header:
            raise ImportFormatError(f"{path}: line 1: no header (empty file)")
        fields = header
        for fields in reader:
            if not fields:
                continue  # a blank line, as pandas skips it
            line = reader.line_num
            if len(fields) != len(header):
                cut = len(fields) < len(header)
                column = header[min(len(fields), len(header)) - 1]
                raise ImportFormatError(
                    f"{path}: line {line}, column {column!r}: {len(fields)} fields where the header has "
                    f"{len(header)}"
                    + (" (the line stops there: a truncated file?)" if cut else " (an unquoted comma?)")
                )
            for name, value in zip(header, fields):
                if name in text_columns or not value.strip():
                    continue
                try:
                    float(value)
                except ValueError:
                    raise ImportFormatError(
                        f"{path}: line {line}, column {name!r}: {value!r} is not a number"
                    ) from None
    except csv.Error as exc:
        raise ImportFormatError(f"{path}: line {reader.line_num}: not a well-formed CSV line ({exc})") from None
    if not text.endswith(("\n", "\r")):
        raise ImportFormatError(
            f"{path}: line {reader.line_num}, column {header[len(fields) - 1]!r}: the file does not end with a "
            "newline, so its last value may be cut short (a truncated file?)"
        )


def read_csv_strict(path: Path, expected: list[str], what: str) -> pd.DataFrame:
    """Read a CSV whose header must be exactly `expected` (a renamed column would lose data) and which parses
    completely (check_csv_complete)."""
    check_csv_complete(path)
    df = pd.read_csv(path, float_precision="round_trip", on_bad_lines="error")  # figures exactly as written
    have = [str(c) for c in df.columns]
    if set(have) != set(expected):
        raise ImportFormatError(
            f"{path}: columns do not match the {what} table. "
            f"Expected columns: {sorted(expected)}; "
            f"missing: {sorted(set(expected) - set(have))}; "
            f"unexpected: {sorted(set(have) - set(expected))}"
        )
    return df


def _val(x):
    """CSV cell -> Python scalar, None for empty/NaN."""
    if is_missing(x):
        return None
    return x.item() if hasattr(x, "item") else x


# --------------------------------------------------------------------------------------------
# arxiv_2508_16700: the CSVs released with arXiv 2508.16700 (github.com/deepdik/GPT-OSS-20B-analysis).
# How each figure was made is read from the study's scripts; see reference/arxiv-2508.16700/PROVENANCE.md.
# --------------------------------------------------------------------------------------------

ARXIV = "arxiv_2508_16700"
STUDY_BACKEND = Backend.EAGER  # the study ran plain generate() with a dynamic cache

_COLUMNS = {
    "latency": "model,model_type,prompt_tokens,gen_tokens,TTFT_ms,p50_ms,p95_ms,p99_ms,TPOT_tokps",
    "energy": "model,device,gpu_index,context_length,gen_tokens,num_runs,ttft_ms,ttft_joules,"
    "decode_tokens_per_second,total_tokens_per_second,avg_gpu_power_watts,baseline_gpu_power_watts,"
    "avg_gpu_utilization_percent,avg_memory_utilization_percent,baseline_gpu_utilization_percent,"
    "baseline_memory_utilization_percent,energy_per_decoded_token_joules,"
    "energy_per_1k_decoded_tokens_joules,energy_per_total_token_joules",
    "memory": "model,device_name,context_length,gen_tokens,total_tokens,baseline_alloc_mb,"
    "baseline_reserved_mb,after_tokenize_alloc_mb,after_tokenize_reserved_mb,after_generate_alloc_mb,"
    "after_generate_reserved_mb,peak_alloc_mb,peak_reserved_mb,tokenize_delta_alloc_mb,"
    "generate_delta_alloc_mb,total_delta_alloc_mb,kv_cache_alloc_mb,kv_cache_reserved_mb,"
    "memory_per_token_alloc_mb,memory_per_token_reserved_mb,util_after_percent_alloc,"
    "util_peak_percent_alloc,util_peak_percent_reserved,total_gpu_memory_mb",
    "context_scaling": "max_new_tokens,mean_new_tokens,mean_time_s,mean_tokps,measured_context_tokens,"
    "model,p50_new_tokens,p50_time_s,p50_tokps,p95_time_s,p95_tokps,runs,target_context_length,"
    "throughput_scope",
    "decoding": "decoding_method,max_new_tokens,mean_new_tokens,mean_time_s,mean_tokps,model,"
    "p50_new_tokens,p50_time_s,p50_tokps,p95_time_s,p95_tokps,runs,throughput_scope",
    "precision": "error,max_new_tokens,mean_new_tokens,mean_time_s,mean_tokps,model,p50_new_tokens,"
    "p50_time_s,p50_tokps,p95_time_s,p95_tokps,precision,runs,throughput_scope",
    "params": "model_id,model_name,architecture,organization,context_length,total_params_B,"
    "active_params_B,ttft_ms,tpot_tokps,peak_memory_GB,energy_per_1k_joules,tokens_per_watt,"
    "throughput_per_activeB_tokps_per_B,inv_ttft_per_activeB_tokps_per_B,tokens_per_watt_per_activeB,"
    "tokens_per_GB_tokps_per_GB",
}
_COLUMNS = {kind: cols.split(",") for kind, cols in _COLUMNS.items()}

# Which released file is which table (paths relative to the imported folder; "memeory" is theirs).
_FILES = {
    "latency": r"latency/latency_[^/]+_universal\.csv",
    "memory": r"memeory/memory_[^/]+_v2\.csv",
    "energy": r"energy/energy_[^/]+_fixed\.csv",
    "context_scaling": r"ablations/ablation_context_scaling_[^/]+\.csv",
    "decoding": r"ablations/ablation_decoding_parameters_[^/]+\.csv",
    "precision": r"ablations/ablation_quantization_effects_[^/]+\.csv",
    "params": r"ape/ape_analysis\.csv",
}
# Order matters: a figure already placed by an earlier table is kept, the later one is noted.
_ORDER = [
    "params",
    "latency",
    "memory",
    "energy",
    "context_scaling",
    "decoding",
    "precision",
]

# Decoding labels of the study -> our mode names and the settings its script used (= CONTRACTS.md).
_DECODING = {
    label: (name, STANDARD_DECODING[name])
    for label, name in {
        "Greedy": "greedy",
        "Top-p (0.9)": "top_p",
        "Top-k (50)": "top_k",
        "High Temp": "high_temp",
        "Low Temp": "low_temp",
    }.items()
}
_DTYPES = {"BF16": DType.BFLOAT16, "FP16": DType.FLOAT16, "FP32": DType.FLOAT32}
# The study's model_type column says how it prompted.
_PROMPT_MODES = {"chat_template": PromptMode.CHAT_TEMPLATE, "completion": PromptMode.RAW_TEXT}
# The ablations on a short fixed prompt did not record its length: the context is unknown.
_SHORT_PROMPTS = {
    "decoding": "Explain the benefits of renewable energy in 2–3 sentences.",
    "precision": "Write a short poem about artificial intelligence.",
}
# Environment stated in the study (one H100 NVL; its paper gives "PyTorch 2.7.1+ with Transformers 4.55.2+":
# minimums, not versions its CSVs recorded), and its batch (one request at a time).
_ENV = {
    "device": Device.CUDA,
    "device_name": "NVIDIA H100 NVL",
    "torch_version": "2.7.1+",
    "transformers_version": "4.55.2+",
    "batch_size": 1,
}
# What the study's transformers ran (4.55's defaults; deploybench.engines.experts): eager attention and every
# expert for every token for gpt-oss (no SDPA: attention sinks), SDPA for the dense models.
_IMPLEMENTATIONS = {
    "openai/gpt-oss-20b": {"attn_implementation": "eager", "experts_implementation": ExpertsImplementation.ALL_EXPERTS}
    | {"experts_read_per_token": ExpertsRead.ALL},
    "Qwen/Qwen3-32B": {"attn_implementation": "sdpa"},
    "01-ai/Yi-34B": {"attn_implementation": "sdpa"},
}
_ABLATION_NOTE = "ablation: 5 runs; p50 = middle run, p95 = index ceil(0.95*(n-1)) = the maximum"


class _Cells:
    """One row per (model, context, gen, decoding, dtype) cell, filled table by table."""

    def __init__(self, spec: dict, folder: Path):
        self.spec, self.folder = spec, folder
        self.model_map = spec.get("model_map") or {}
        self.rows: dict[tuple, dict] = {}
        self.files: dict[tuple, set] = {}
        self.params: dict[str, dict] = {}  # hub id -> total/active params from the study

    def model(self, model_id: str, path: Path) -> str:
        if model_id not in self.model_map:
            raise ImportFormatError(
                f"{path}: model {model_id!r} is not in model_map of external table "
                f"{self.spec['name']!r} (model_map keys: {sorted(self.model_map)})"
            )
        return self.model_map[model_id]

    def get(self, path, model_id, context, gen, decoding="greedy", dtype=DType.BFLOAT16, tag=None):
        """The row of a cell, created on first use. `tag` names the prompt when context is unknown."""
        key = (model_id, context, int(gen), decoding, dtype, tag)
        if key not in self.rows:
            model = self.model(model_id, path)
            ctx = str(int(context)) if context is not None else f"NA.{tag}"
            decoding_settings = next(s for n, s in _DECODING.values() if n == decoding)
            self.rows[key] = {
                "cell_id": cell_id(model, STUDY_BACKEND, dtype, ctx, int(gen), decoding),
                "model": model,
                "backend": STUDY_BACKEND,
                "dtype": dtype,
                "context_tokens": None if context is None else int(context),
                "gen_tokens": int(gen),
                "decoding": decoding,
                "status": Status.OK,
                "valid": None,  # our validity checks were not run on these figures
                "weights_source": WeightsSource.PRETRAINED,
                "model_ref": model_id,
                **decoding_settings,
                **_ENV,
                **_IMPLEMENTATIONS.get(model_id, {}),
                **self.params.get(model_id, {}),
                "notes": [],
            }
            self.files[key] = set()
        self.files[key].add(path.relative_to(self.folder).as_posix())
        return self.rows[key]

    @staticmethod
    def put(row: dict, values: dict, origin: str) -> None:
        """Fill empty columns; a column already set keeps its value and the other is noted."""
        for col, value in values.items():
            value = _val(value)
            if value is None:
                continue
            if row.get(col) is None:
                row[col] = value
            elif row[col] != value:
                row["notes"].append(f"{origin} also gave {col}={value!r}; kept {row[col]!r}")

    def finish(self) -> list[dict]:
        out = []
        for key, row in self.rows.items():
            model_id, context, gen, decoding, dtype, tag = key
            spec = {"import": self.spec["name"], "format": ARXIV, "model_id": model_id, "prompt": tag}
            spec |= {"context": context, "gen": gen, "decoding": decoding, "dtype": dtype, "backend": STUDY_BACKEND}
            spec["files"] = sorted(self.files[key])
            row["spec_json"] = canonical_json(spec)
            out.append(row)
        return sorted(out, key=lambda r: r["cell_id"])


def _arxiv_tables(folder: Path) -> dict[str, list[Path]]:
    """Every CSV under the folder, classified; a CSV no table claims is an error."""
    tables: dict[str, list[Path]] = {kind: [] for kind in _FILES}
    for path in sorted(folder.rglob("*.csv")):
        rel = path.relative_to(folder).as_posix()
        kind = next((k for k, rx in _FILES.items() if re.fullmatch(rx, rel)), None)
        if kind is None:
            raise ImportFormatError(
                f"{path}: not a table the {ARXIV} importer knows; expected files matching {sorted(_FILES.values())}"
            )
        tables[kind].append(path)
    if not any(tables.values()):
        raise ImportFormatError(f"{folder}: no {ARXIV} tables found")
    return tables


def _params(cells: _Cells, path: Path, df: pd.DataFrame) -> None:
    # The study's own parameter counts (3.6 / 32 / 34 B active): labelled so, never "counted".
    for model_id, group in df.groupby("model_name"):
        total, active = (
            group["total_params_B"].unique(),
            group["active_params_B"].unique(),
        )
        if len(total) != 1 or len(active) != 1:
            raise ImportFormatError(f"{path}: {model_id} has several parameter counts")
        cells.params[model_id] = {
            "total_params": round(float(total[0]) * 1e9),
            "active_params": round(float(active[0]) * 1e9),
            "active_params_source": f"study figures {float(total[0])}B total, {float(active[0])}B active ({path.name})",
        }


def _latency(cells: _Cells, path: Path, df: pd.DataFrame) -> None:
    for r in df.to_dict("records"):
        row = cells.get(path, r["model"], r["prompt_tokens"], r["gen_tokens"])
        fig = {
            "ttft_ms": r["TTFT_ms"],
            "e2e_ms_p50": r["p50_ms"],
            "e2e_ms_p95": r["p95_ms"],
            "e2e_ms_p99": r["p99_ms"],
            # TPOT_tokps = median over runs of gen / full-generate time: prefill included.
            "e2e_tps": r["TPOT_tokps"],
            "n_runs": 10,  # the script's default --num_requests (PROVENANCE: 10 runs)
            "warmup_runs": 0,  # its only warm-up is a 16-token prompt with 1 new token
            "percentile_method": "p50: statistics.median of 10; p95/p99: sorted[ceil(q*(n-1))]",
            "prompt_mode": _PROMPT_MODES.get(r["model_type"], r["model_type"]),
        }
        cells.put(row, fig, path.name)
        row["notes"] += [
            "e2e_tps is the study's TPOT_tokps: gen / full-generate time, prefill included "
            "(median over runs), not decode speed",
            "e2e_ms_p95 and e2e_ms_p99 both equal the maximum over 10 runs",
            "ttft_ms: median of 5 one-token generates timed after the full generates",
            "prompt cut or padded to length after templating (the generation prompt can be cut); "
            "no attention mask; warm-up was not at full shape",
        ]


def _memory(cells: _Cells, path: Path, df: pd.DataFrame) -> None:
    # Allocated after load: only a model's first cell was measured straight after loading (later ones carry
    # what the previous run left allocated), so every cell takes the model's smallest.
    weights = df.groupby("model")["baseline_alloc_mb"].min()
    for r in df.to_dict("records"):
        row = cells.get(path, r["model"], r["context_length"], r["gen_tokens"])
        fig = {
            "weights_bytes": round(weights[r["model"]] * MIB),
            "peak_allocated_bytes": round(r["peak_alloc_mb"] * MIB),
            "peak_reserved_bytes": round(r["peak_reserved_mb"] * MIB),
            "device_name": r["device_name"],
        }
        cells.put(row, fig, path.name)
        row["notes"] += [
            "memory: the study's MB are MiB (2**20 bytes, torch.cuda stats); peak over a manual "
            f"prefill + {r['gen_tokens']}-step decode with the cache alive",
            f"the study's kv_cache_alloc_mb ({r['kv_cache_alloc_mb']:.1f} MiB) is peak minus "
            "post-tokenize allocation (mostly activations), not the KV cache: kv_cache_bytes left "
            f"empty; generate_delta_alloc_mb ({r['generate_delta_alloc_mb']:.1f} MiB) is closer "
            "to the KV growth",
        ]


def _energy(cells: _Cells, path: Path, df: pd.DataFrame) -> None:
    for r in df.to_dict("records"):
        row = cells.get(path, r["model"], r["context_length"], r["gen_tokens"])
        j_per_1k = r["energy_per_1k_decoded_tokens_joules"]
        fig = {
            "j_per_1k_tokens": j_per_1k,  # gross: mean power x wall time / decoded tokens
            "tokens_per_j": 1000.0 / j_per_1k if j_per_1k else None,
            "avg_power_w": r["avg_gpu_power_watts"],
            "energy_source": "nvidia-smi power.draw at start and end of each run (study)",
        }
        cells.put(row, fig, path.name)
        row["notes"] += [
            f"energy: two nvidia-smi power readings per run (start, end) over {r['num_runs']} runs, "
            "not an integrated counter; gross, no idle subtraction",
            f"energy runs: raw-text prompt (no template); their tok/s {r['decode_tokens_per_second']:.2f} "
            f"(mean-based, prefill included) and TTFT {r['ttft_ms']:.1f} ms (one sample) not imported",
            f"baseline_gpu_power_watts {r['baseline_gpu_power_watts']:.1f} W is one reading before "
            "the cell, not idle power after a cool-down: not imported as idle_power_w",
        ]


def _ablation_figures(r: dict) -> dict:
    fig = {
        "e2e_ms_p50": r["p50_time_s"] * 1000.0,
        "e2e_ms_p95": r["p95_time_s"] * 1000.0,
        "e2e_tps": r["p50_tokps"],  # middle run of gen / full-generate time, prefill included
        "n_runs": r["runs"],
        "warmup_runs": 0,  # its only warm-up is a 16-token prompt with 1 new token
        "percentile_method": "sorted[ceil(q*(n-1))] of 5 runs",
        "prompt_mode": PromptMode.CHAT_TEMPLATE,
    }
    if _val(r["mean_new_tokens"]) is not None and r["mean_new_tokens"] == r["max_new_tokens"]:
        fig["gen_tokens_measured"] = int(r["max_new_tokens"])  # every run produced all tokens
    return fig


def _context_scaling(cells: _Cells, path: Path, df: pd.DataFrame) -> None:
    for r in df.to_dict("records"):
        row = cells.get(path, r["model"], r["target_context_length"], r["max_new_tokens"])
        fig = _ablation_figures(r) | {"context_tokens_measured": r["measured_context_tokens"]}
        if row.get("e2e_tps") is not None:  # the main latency table measured this cell already
            row["notes"].append(
                f"context-scaling ablation (separate 5-run session) also measured this cell: "
                f"e2e_ms_p50 {fig['e2e_ms_p50']:.1f} ms, e2e_tps {fig['e2e_tps']:.2f}; "
                "the latency table's figures are kept"
            )
            continue
        cells.put(row, fig, path.name)
        row["notes"] += [_ABLATION_NOTE, "prompt cut to length after the chat template"]


def _short_prompt_row(cells, path, r, kind, decoding, dtype) -> dict:
    row = cells.get(path, r["model"], None, r["max_new_tokens"], decoding, dtype, tag=kind)
    row["seed"] = 1234  # the ablation script seeds run i with 1234 + i
    row["notes"] += [
        f"{kind} ablation: context not recorded (short prompt {_SHORT_PROMPTS[kind]!r} with the chat template)",
        _ABLATION_NOTE,
    ]
    return row


def _decoding(cells: _Cells, path: Path, df: pd.DataFrame) -> None:
    for r in df.to_dict("records"):
        if r["decoding_method"] not in _DECODING:
            raise ImportFormatError(
                f"{path}: unknown decoding_method {r['decoding_method']!r}; expected one of {sorted(_DECODING)}"
            )
        decoding = _DECODING[r["decoding_method"]][0]
        row = _short_prompt_row(cells, path, r, "decoding", decoding, DType.BFLOAT16)
        cells.put(row, _ablation_figures(r), path.name)


def _precision(cells: _Cells, path: Path, df: pd.DataFrame) -> None:
    for r in df.to_dict("records"):
        if r["precision"] not in _DTYPES:
            raise ImportFormatError(f"{path}: unknown precision {r['precision']!r}; expected one of {sorted(_DTYPES)}")
        row = _short_prompt_row(cells, path, r, "precision", "greedy", _DTYPES[r["precision"]])
        if _val(r["error"]) is not None:
            # The study ran it and the model refused the dtype: an expected failure, shown as such.
            row |= {
                "status": Status.FAILED,
                "failure_kind": FailureKind.UNSUPPORTED,
                "error": str(r["error"]),
            }
            continue
        cells.put(row, _ablation_figures(r), path.name)


_READERS = {
    "params": _params,
    "latency": _latency,
    "memory": _memory,
    "energy": _energy,
    "context_scaling": _context_scaling,
    "decoding": _decoding,
    "precision": _precision,
}


@register_format(ARXIV)
def import_arxiv_2508_16700(spec: dict, folder: Path) -> list[dict]:
    tables = _arxiv_tables(folder)
    cells = _Cells(spec, folder)
    for kind in _ORDER:
        for path in tables[kind]:
            df = read_csv_strict(path, _COLUMNS[kind], f"{ARXIV} {kind}")
            _READERS[kind](cells, path, df)
    return cells.finish()
