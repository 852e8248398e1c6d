"""The TPOT-artifact step.

An older pipeline wrote 1000/ttft_ms where an end-to-end tok/s figure belonged. Every row gets a
check: rows with raw e2e samples are checked against tokens / median(samples), tokens = batch_size x gen
(every sequence's); rows without samples (imported tables, batch 1) get the artifact rule: a tok/s figure
within 3% of 1000/ttft_ms is recomputed as tokens / (e2e_ms_p50 / 1000). A changed figure is never
silent: the raw value stays in `e2e_tps_raw`, `tpot_artifact` flags it and `tpot_check` says what was done.
"""

from __future__ import annotations

import statistics

import pandas as pd

from deploybench.results import schema
from deploybench.results.values import is_missing, number_or_none

TOLERANCE = 0.03


def _samples(x) -> list[float]:
    if is_missing(x) or isinstance(x, float):  # missing, or a lone number: no samples
        return []
    return [v for v in (number_or_none(s) for s in x) if v is not None]


def check_row(row: dict) -> tuple[float | None, float | None, bool, str]:
    """(e2e_tps to keep, recomputed figure, artifact?, what was done) for one row."""
    raw, gen = number_or_none(row.get("e2e_tps")), number_or_none(row.get("gen_tokens"))
    if row.get("status") != "ok":
        return raw, None, False, "not checked: failed row"
    if not gen:
        return raw, None, False, "not checked: no gen_tokens"
    tokens = gen * schema.batch_of(row)  # every sequence's: a run of batch B makes B x gen
    samples = [s for s in _samples(row.get("e2e_ms_samples")) if s > 0]
    if samples:
        return _check_samples(raw, tokens, samples)
    return _check_artifact(raw, tokens, number_or_none(row.get("ttft_ms")), number_or_none(row.get("e2e_ms_p50")))


def _check_samples(raw, tokens, samples):
    rec = tokens / (statistics.median(samples) / 1000.0)
    basis = f"tokens / median of {len(samples)} e2e samples = {rec:.4g}"
    if raw is None:
        return rec, rec, True, f"e2e_tps was empty: set to {basis}"
    diff = abs(raw - rec) / rec
    if diff > TOLERANCE:
        return (
            rec,
            rec,
            True,
            f"e2e_tps {raw:.4g} is {diff:.1%} off {basis} (> 3%): replaced",
        )
    return raw, rec, False, f"ok: e2e_tps {raw:.4g} within {diff:.2%} of {basis}"


def _check_artifact(raw, tokens, ttft_ms, p50_ms):
    rec = tokens / (p50_ms / 1000.0) if p50_ms and p50_ms > 0 else None
    if raw is None:
        return None, rec, False, "not checked: no e2e_tps figure"
    if not ttft_ms or ttft_ms <= 0:
        return raw, rec, False, "not checked: no ttft_ms to test the artifact rule"
    inv = 1000.0 / ttft_ms
    off = abs(raw - inv) / inv
    if off <= TOLERANCE:
        what = f"e2e_tps {raw:.4g} is within {off:.1%} of 1000/ttft_ms = {inv:.4g}: TPOT artifact"
        if rec is None:
            return (
                None,
                None,
                True,
                f"{what}; no e2e_ms_p50 to recompute from: withdrawn (null)",
            )
        return rec, rec, True, f"{what}; recomputed as tokens / p50 s = {rec:.4g}"
    text = f"ok: e2e_tps {raw:.4g} is {off:.0%} off 1000/ttft_ms = {inv:.4g}"
    if rec is not None:
        text += f"; tokens / p50 s = {rec:.4g} ({(raw - rec) / rec:+.2%})"
    return raw, rec, False, text


def correct_tpot(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` with e2e_tps corrected and the catalogue's tpot-stage columns added."""
    out = df.copy()
    results = [check_row(row) for row in out.to_dict("records")]
    kept, rec, flag, text = (list(col) for col in zip(*results)) if results else ([],) * 4
    out["e2e_tps_raw"] = pd.Series(
        [number_or_none(v) for v in out.get("e2e_tps", [None] * len(out))],
        index=out.index,
        dtype="float64",
    )
    out["e2e_tps"] = pd.Series(kept, index=out.index, dtype="float64")
    out["e2e_tps_recomputed"] = pd.Series(rec, index=out.index, dtype="float64")
    out["tpot_artifact"] = pd.Series(flag, index=out.index, dtype="bool")
    out["tpot_check"] = pd.Series(text, index=out.index, dtype="str")
    return out
