"""The result schema: one row per cell, written atomically to Parquet with an explicit schema.

Column names carry their unit. Adding columns is free; renaming one needs a SCHEMA_VERSION bump.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "1.0"

_F64 = pa.float64()
_I64 = pa.int64()
_STR = pa.string()
_BOOL = pa.bool_()
_F64_LIST = pa.list_(pa.float64())
_STR_LIST = pa.list_(pa.string())

# (name, type, description). The description is what the report's data dictionary prints.
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    # identity
    ("cell_id", _STR, "model/backend-dtype/cCONTEXT-gGEN-DECODING"),
    ("model", _STR, "model name from the config"),
    (
        "backend",
        _STR,
        "eager (generate, dynamic cache) | compiled (generate, static cache + torch.compile) | "
        "compiled_loop (own loop of a compiled step, no host sync per token)",
    ),
    ("dtype", _STR, "weights and activations dtype"),
    (
        "context_tokens",
        _I64,
        "requested prompt length in tokens (after the chat template)",
    ),
    ("gen_tokens", _I64, "requested number of generated tokens"),
    ("decoding", _STR, "decoding mode name from the config"),
    ("spec_json", _STR, "canonical JSON of every setting of this cell"),
    ("harness_version", _STR, "deploybench.HARNESS_VERSION"),
    ("schema_version", _STR, "result schema version"),
    (
        "source",
        _STR,
        "'deploybench' for rows measured here, 'import:<name>' for imported rows",
    ),
    # status
    ("status", _STR, "ok | failed"),
    ("failure_kind", _STR, "oom | context_too_long | unsupported | ... (failed rows)"),
    ("error", _STR, "error text of a failed row"),
    ("valid", _BOOL, "true when no validity check failed"),
    ("invalid_reasons", _STR_LIST, "why the row is not valid"),
    (
        "notes",
        _STR_LIST,
        "caveats that do not invalidate the row (e.g. how an imported figure was made)",
    ),
    # decoding settings
    ("do_sample", _BOOL, "sampling (true) or greedy (false)"),
    ("temperature", _F64, "sampling temperature"),
    ("top_p", _F64, "nucleus sampling threshold"),
    ("top_k", _I64, "top-k sampling cut-off"),
    ("seed", _I64, "base seed; run i uses seed + i"),
    # model
    ("weights_source", _STR, "random (architecture card) | pretrained"),
    (
        "model_ref",
        _STR,
        "hub id, local path or architecture card the weights came from",
    ),
    ("model_type", _STR, "transformers model_type"),
    ("total_params", _I64, "all parameters"),
    ("active_params", _I64, "parameters a token multiplies, input embedding excluded"),
    ("active_params_source", _STR, "counted | config override"),
    (
        "experts_implementation",
        _STR,
        "transformers experts implementation (MoE) or n/a",
    ),
    (
        "experts_read_per_token",
        _STR,
        "routed | all | n/a: which expert weights a decode step reads",
    ),
    ("attn_implementation", _STR, "transformers attention implementation"),
    ("cache_implementation", _STR, "dynamic | static"),
    # prompt
    ("prompt_mode", _STR, "chat_template | raw_text | random_ids"),
    ("context_tokens_measured", _I64, "prompt length actually fed"),
    (
        "gen_tokens_measured",
        _I64,
        "new tokens actually generated (checked on every run)",
    ),
    # latency
    ("warmup_runs", _I64, "discarded full-shape runs before measuring"),
    ("n_runs", _I64, "measured runs per figure"),
    ("percentile_method", _STR, "how p50/p95/p99 are computed"),
    ("ttft_ms", _F64, "median wall time of a 1-token generate (prefill included)"),
    ("ttft_ms_samples", _F64_LIST, "raw TTFT samples"),
    ("e2e_ms_p50", _F64, "median wall time of a full generate of gen_tokens"),
    ("e2e_ms_p95", _F64, "95th percentile of the full-generate wall time"),
    ("e2e_ms_p99", _F64, "99th percentile of the full-generate wall time"),
    ("e2e_ms_samples", _F64_LIST, "raw full-generate wall times"),
    ("decode_tps", _F64, "(gen-1)/(t_last-t_first) tokens/s, median over runs"),
    ("decode_tps_samples", _F64_LIST, "decode_tps of every run"),
    ("decode_tps_cv", _F64, "coefficient of variation of decode_tps over runs"),
    ("tpot_ms", _F64, "1000/decode_tps: vLLM's and MLPerf's TPOT"),
    ("itl_ms_p50", _F64, "median inter-token latency, runs pooled (device clock for compiled_loop)"),
    ("itl_ms_p95", _F64, "95th percentile inter-token latency"),
    ("itl_ms_p99", _F64, "99th percentile inter-token latency"),
    ("itl_ms_samples", _F64_LIST, "every inter-token latency of every run"),
    (
        "e2e_tps",
        _F64,
        "gen/(e2e_ms_p50/1000): the study's 'TPOT (tok/s)', prefill included",
    ),
    ("compile_s", _F64, "torch.compile time spent in warm-up (compiled and compiled_loop backends)"),
    ("compiled", _BOOL, "whether a torch.compile'd decode step ran"),
    # memory
    ("weights_bytes", _I64, "allocated bytes after load (CUDA)"),
    (
        "peak_allocated_bytes",
        _I64,
        "max_memory_allocated during the measured decode, cache alive",
    ),
    ("peak_reserved_bytes", _I64, "max_memory_reserved during the measured decode"),
    ("kv_cache_bytes", _I64, "bytes of the returned cache tensors"),
    (
        "kv_cache_bytes_analytic",
        _I64,
        "KV bytes from the architecture (sliding windows included)",
    ),
    ("memory_null_reason", _STR, "why allocator fields are null (CPU)"),
    ("host_peak_rss_bytes", _I64, "peak resident set size of the process"),
    # energy
    ("energy_source", _STR, "nvml_total_energy_counter | unavailable: <reason>"),
    ("energy_window_s", _F64, "length of the energy window"),
    ("energy_runs", _I64, "full generates inside the energy window"),
    ("energy_tokens", _I64, "tokens generated inside the energy window"),
    ("energy_j", _F64, "gross energy over the window (NVML counter)"),
    ("energy_j_net", _F64, "energy minus idle power x window"),
    ("idle_power_w", _F64, "idle power after cool-down, before the cell"),
    ("avg_power_w", _F64, "energy_j / energy_window_s"),
    ("sampler_energy_j", _F64, "power-sampler integral over the same window"),
    ("sampler_avg_power_w", _F64, "mean sampled power"),
    ("sampler_n_samples", _I64, "power samples taken"),
    ("energy_counter_sampler_rel_diff", _F64, "|counter - sampler| / counter"),
    ("j_per_1k_tokens", _F64, "gross joules per 1000 generated tokens"),
    ("j_per_1k_tokens_net", _F64, "idle-subtracted joules per 1000 generated tokens"),
    ("tokens_per_j", _F64, "generated tokens per gross joule"),
    ("gpu_temp_c_start", _F64, "GPU temperature at window start"),
    ("gpu_temp_c_end", _F64, "GPU temperature at window end"),
    ("sm_clock_mhz_start", _F64, "SM clock at window start"),
    ("sm_clock_mhz_end", _F64, "SM clock at window end"),
    ("throttle_reasons", _STR_LIST, "clock slowdown reasons seen in the window"),
    ("other_gpu_processes", _I64, "other processes on the GPU during the window"),
    # roofline
    (
        "mem_bandwidth_bytes_per_s",
        _F64,
        "device-to-device copy bandwidth measured on this device",
    ),
    (
        "decode_bytes_per_token",
        _F64,
        "weights read per decode step + KV bytes read at this context",
    ),
    ("roofline_tps", _F64, "mem_bandwidth / decode_bytes_per_token"),
    ("roofline_fraction", _F64, "decode_tps / roofline_tps"),
    # environment
    ("device", _STR, "cpu | cuda"),
    ("device_name", _STR, "GPU or CPU model name"),
    ("device_uuid", _STR, "GPU UUID (NVML)"),
    ("driver_version", _STR, "NVIDIA driver"),
    ("cuda_version", _STR, "CUDA runtime torch was built with"),
    ("torch_version", _STR, "torch.__version__"),
    ("transformers_version", _STR, "transformers.__version__"),
    ("python_version", _STR, "Python version"),
    ("hostname", _STR, "machine name"),
    ("started_at", _STR, "UTC ISO time the cell started"),
    ("load_s", _F64, "model build/load time"),
    ("cell_wall_s", _F64, "wall time of the whole cell measurement, load included"),
]

SCHEMA = pa.schema(
    [pa.field(name, typ) for name, typ, _ in COLUMNS],
    metadata={"deploybench_schema_version": SCHEMA_VERSION},
)
COLUMN_NAMES = [name for name, _, _ in COLUMNS]
DESCRIPTIONS = {name: desc for name, _, desc in COLUMNS}


def empty_row() -> dict:
    """A row with every column present and null."""
    return dict.fromkeys(COLUMN_NAMES)


def to_table(rows: list[dict]) -> pa.Table:
    """Rows -> table with the explicit schema; unknown keys are an error (typos lose data)."""
    for row in rows:
        unknown = set(row) - set(COLUMN_NAMES)
        if unknown:
            raise KeyError(f"result row has columns not in the schema: {sorted(unknown)}")
    full = [{**empty_row(), **row} for row in rows]
    return pa.Table.from_pylist(full, schema=SCHEMA)


def write_row(row: dict, path: str | os.PathLike) -> Path:
    """Write one row atomically: a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = to_table([row])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_rows(path: str | os.PathLike) -> list[dict]:
    return pq.read_table(path).to_pylist()
