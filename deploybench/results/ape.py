"""Active Parameter Efficiency (APE) and ratios to a baseline model.

APE divides a figure by the parameters a token multiplies (in billions), which puts mixture-of-
experts and dense models on one scale. Failed rows and missing inputs give NaN (null in Parquet),
never a division by zero or by None.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deploybench.enums import Stage
from deploybench.results import metrics, schema
from deploybench.results.values import is_missing, numbers

# The columns and their definitions live in the metric catalogue; this module computes them.
APE_COLUMNS = [m.name for m in metrics.of_stage(Stage.APE)]
RATIO_METRICS = [m.name for m in metrics.ratio_bases()]
CELL_KEY = list(metrics.BASELINE_CELL_KEY)


def _col(df: pd.DataFrame, name: str) -> np.ndarray:
    """A column as float64 with NaN where it holds no number (absent column: all NaN)."""
    if name not in df:
        return np.full(len(df), np.nan)
    return numbers(df[name])


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def add_ape(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    ok = (out["status"] == "ok").to_numpy(dtype=bool, na_value=False)
    active_b = _col(out, "active_params") / 1e9
    tokens_per_j = _col(out, "tokens_per_j")
    tokens_per_j = np.where(
        np.isfinite(tokens_per_j),
        tokens_per_j,
        _div(1000.0, _col(out, "j_per_1k_tokens")),
    )
    values = {
        "ape_e2e_tps_per_active_b": _div(_col(out, "e2e_tps"), active_b),
        "ape_decode_tps_per_active_b": _div(_col(out, "decode_tps"), active_b),
        "ape_inv_ttft_per_s_per_active_b": _div(_div(1000.0, _col(out, "ttft_ms")), active_b),
        "ape_tokens_per_j_per_active_b": _div(tokens_per_j, active_b),
        "e2e_tps_per_peak_gb": _div(_col(out, "e2e_tps"), _col(out, "peak_allocated_bytes") / 1e9),
    }
    for col, v in values.items():
        out[col] = np.where(ok, v, np.nan)
    return out


def _key(row: dict) -> tuple:
    # Null and NaN identity values (an unknown context) compare equal to each other.
    row = {**row, "batch_size": schema.batch_of(row)}
    return tuple(None if is_missing(row.get(c)) else row.get(c) for c in CELL_KEY)


def _unique(indices: list[int]) -> int:
    return indices[0] if len(indices) == 1 else -1  # none or several: no baseline


def add_ratios(df: pd.DataFrame, baseline_model) -> pd.DataFrame:
    """ratio_to_baseline_<metric>: the row's figure over the baseline model's at the same cell.

    `baseline_model` is a model name, or {source: model name} where sources use different names.
    A cell whose baseline row is missing, failed or not unique gets NaN and no baseline name.
    """
    out = df.copy()
    rows = out.to_dict("records")

    def baseline_of(row):
        if isinstance(baseline_model, dict):
            return baseline_model.get(row.get("source"))
        return baseline_model

    baselines: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        if row.get("model") == baseline_of(row) and row.get("status") == "ok":
            baselines.setdefault(_key(row), []).append(i)
    idx = np.array([_unique(baselines.get(_key(r), [])) for r in rows], dtype=int)
    has = idx >= 0
    ok = (out["status"] == "ok").to_numpy(dtype=bool, na_value=False)
    for metric in RATIO_METRICS:
        values = _col(out, metric)
        base = np.full(len(rows), np.nan)
        base[has] = values[idx[has]]
        out[metrics.ratio_column(metric)] = np.where(ok & has, _div(values, base), np.nan)
    names = [baseline_of(r) if h and o else None for r, h, o in zip(rows, has, ok)]
    out["ratio_baseline_model"] = pd.Series(names, index=out.index, dtype="str")
    return out


def compute_ape(df: pd.DataFrame, baseline_model) -> pd.DataFrame:
    """APE columns and baseline ratios (the catalogue's ape and ratio stages) added to a copy of `df`."""
    return add_ratios(add_ape(df), baseline_model)
