"""Markdown tables of a run's serving load points and, beside them, its generate() cells (README tables).

    python benchmarks/serving_table.py reference-run/serving-2026-12-07/cells

Serving: one row per load point (concurrency or rate), in load order per model: output tok/s over the steady
window, TTFT and TPOT at p50 and p99 over the requests, J per output token (gross and idle-subtracted), the
server's GPU memory (NVML, its reserved KV pool included), the KV-cache use vLLM reported, the GPU's mean
utilisation, whether the SLO was met, and why a point is invalid. generate(): TTFT and decode tok/s with their
95% interval (or "runs a–b" where none exists), e2e tok/s, peak allocation, J per generated token, GPU busy
while decoding and what paced decode.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import pandas as pd

from deploybench.report.fmt import DASH, MINUS, fmt_int, fmt_pct, num

GIB = 1 << 30


def _f(value, digits: int = 1) -> str:
    """The column's own number of decimals, otherwise as the report prints a number (deploybench.report.fmt):
    an em dash where missing, thousands commas, the minus sign."""
    v = num(value)
    return DASH if v is None else f"{v:,.{digits}f}".replace("-", MINUS)


def _pct(fraction, decimals: int) -> str:
    return fmt_pct(None if (v := num(fraction)) is None else 100 * v, decimals, signed=False)


def _interval(row, column: str, digits: int = 1) -> str:
    """The median and its 95% interval, or the range of the runs where none exists, in the report's words
    (deploybench.report.model.metric_cell): "41.0 [40.6, 41.3]", "40.4 runs 40.2–40.6"."""
    low, high = row.get(f"{column}_ci95_low"), row.get(f"{column}_ci95_high")
    if num(low) is not None:
        return f"{_f(row[column], digits)} [{_f(low, digits)}, {_f(high, digits)}]"
    samples = row.get(f"{column}_samples")
    if samples is not None and len(samples):
        return f"{_f(row[column], digits)} runs {_f(min(samples), digits)}–{_f(max(samples), digits)}"
    return _f(row[column], digits)


def load_rows(cells: Path) -> pd.DataFrame:
    files = sorted(glob.glob(str(cells / "*" / "*" / "*.parquet")))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def serving_table(rows: pd.DataFrame) -> str:
    head = (
        "| model | concurrency | output tok/s | TTFT p50 [95% CI] / p99 ms | TPOT p50 [95% CI] / p99 ms"
        " | J per output token (net) | server GPU GiB | KV used max | GPU busy | SLO | valid |"
        "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    )
    lines = [head]
    served = rows[rows["load_mode"].notna()].sort_values(["model", "load_concurrency"])
    for _, r in served.iterrows():
        valid = "yes" if r["valid"] else "no: " + "; ".join(r["invalid_reasons"])
        lines.append(
            f"| {r['model']} | {fmt_int(r['load_concurrency'])} | {_f(r['output_tps'], 0)} "
            f"| {_interval(r, 'ttft_ms_p50', 0)} / {_f(r['ttft_ms_p99'], 0)} "
            f"| {_interval(r, 'tpot_ms_p50', 2)} / {_f(r['tpot_ms_p99'], 2)} "
            f"| {_f(r['j_per_output_token'], 3)} ({_f(r['j_per_output_token_net'], 3)}) "
            f"| {_f(r['server_gpu_memory_peak_bytes'] / GIB, 1)} "
            f"| {_pct(r['server_kv_cache_usage_fraction_max'], 1)} "
            f"| {_pct(r['gpu_utilization_fraction_mean'], 0)} "
            f"| {'met' if r['slo_met'] else 'missed: ' + str(r['slo_miss_reason'])} | {valid} |"
        )
    return "\n".join(lines)


def generate_table(rows: pd.DataFrame) -> str:
    head = (
        "| model | backend | TTFT ms [95% CI] | decode tok/s [95% CI] | e2e tok/s | peak alloc GiB | J per token"
        " | GPU busy | decode paced by |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
    )
    lines = [head]
    cells = rows[rows["load_mode"].isna()].sort_values(["model", "backend"])
    for _, r in cells.iterrows():
        lines.append(
            f"| {r['model']} | {r['backend']} | {_interval(r, 'ttft_ms')} | {_interval(r, 'decode_tps')} "
            f"| {_f(r['e2e_tps'])} | {_f(r['peak_allocated_bytes'] / GIB, 1)} | {_f(r['j_per_1k_tokens'] / 1000, 2)} "
            f"| {_pct(r['gpu_busy_fraction'], 0)} | {r['bound_by']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cells", type=Path, help="a results/cells folder")
    rows = load_rows(parser.parse_args().cells)
    machines = sorted(set(rows["device_uuid"].dropna()))
    print(f"machines: {', '.join(machines)}\n")
    print(serving_table(rows))
    print()
    print(generate_table(rows))


if __name__ == "__main__":
    main()
