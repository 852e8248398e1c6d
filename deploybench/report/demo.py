"""A synthetic, schema-correct result set for developing and testing the report.

The figures are made up from a crude model of batch-1 decoding (memory-bound decode, prefill
linear in context), anchored to the orders of magnitude seen on one H200; they are not
measurements. `demo_frame("gpu")` has every figure family, a failed dtype, an invalid cell and
imported study rows; `demo_frame("cpu")` looks like a CPU run of the tiny default config (no
device memory, no energy). Derived columns (TPOT check, APE, baseline ratios) are computed here,
independently of deploybench.tpot / deploybench.ape, so report tests do not depend on them.
"""

from __future__ import annotations

import math
import random

import pandas as pd

from deploybench.schema import SCHEMA_VERSION, to_table
from deploybench.spec import STANDARD_DECODING

IMPORT_SOURCE = "import:arxiv-2508.16700"

_GPU_MODELS = {
    # name: model_type, total, active, weights bytes (bf16), KV bytes per token, decode tok/s,
    # TTFT at 2048 (ms), power W
    "gpt-oss-20b": ("gpt_oss", 20_914_757_184, 3_608_144_320, 41.8e9, 49_152, 32.0, 200.0, 310.0),
    "qwen3-32b": ("qwen3", 32_762_123_264, 31_984_210_944, 65.5e9, 262_144, 16.7, 260.0, 420.0),
    "yi-34b": ("llama", 34_388_917_248, 33_930_295_296, 68.8e9, 245_760, 23.8, 255.0, 430.0),
}
_CPU_MODELS = {
    "tiny-gpt-oss": ("gpt_oss", 2_563_328, 1_050_880, None, 1_024, 310.0, 9.0, None),
    "tiny-qwen3": ("qwen3", 2_260_224, 2_227_456, None, 2_048, 420.0, 7.5, None),
    "tiny-llama": ("llama", 2_196_736, 2_163_968, None, 2_048, 450.0, 7.0, None),
}
_META = {
    "gpt-oss-20b": {
        "display_name": "gpt-oss-20b",
        "organization": "OpenAI",
        "architecture": "MoE (32 experts, 4 per token)",
        "license": "Apache-2.0",
        "license_class": "permissive",
        "usage_policy": "gpt-oss usage policy",
        "model_card": "https://huggingface.co/openai/gpt-oss-20b",
        "safety_features": "safety-trained; configurable reasoning effort",
    },
    "qwen3-32b": {
        "display_name": "Qwen3-32B",
        "organization": "Alibaba (Qwen)",
        "architecture": "Dense",
        "license": "Apache-2.0",
        "license_class": "permissive",
        "model_card": "https://huggingface.co/Qwen/Qwen3-32B",
    },
    "yi-34b": {
        "display_name": "Yi-34B",
        "organization": "01.AI",
        "architecture": "Dense",
        "license": "Yi Series Models Community License",
        "license_class": "restricted (community licence)",
        "model_card": "https://huggingface.co/01-ai/Yi-34B",
    },
}


def demo_config(variant: str = "gpu") -> dict:
    """The config subset the report reads (studies, models, decoding, analysis, report, measurement)."""
    if variant == "cpu":
        m = list(_CPU_MODELS)
        models = {
            name: {
                "source": "random",
                "architecture": f"workflow/architectures/{name}.json",
                "metadata": {
                    "display_name": name,
                    "architecture": "MoE" if "gpt" in name else "Dense",
                    "license": "n/a (random weights)",
                },
            }
            for name in m
        }
        studies = {
            "main": {"kind": "main_comparison", "models": m, "contexts": [32, 64, 128, 256], "gen": [16]},
            "decoding": {
                "kind": "decoding_ablation",
                "models": m[:1],
                "contexts": [128],
                "gen": [16],
                "decoding": list(STANDARD_DECODING),
            },
            "precision": {
                "kind": "precision_sweep",
                "models": m[:1],
                "contexts": [128],
                "gen": [16],
                "dtypes": ["bfloat16", "float16", "float32"],
            },
        }
        return {
            "measurement": {"device": "auto", "warmup_runs": 1, "n_runs": 5, "min_energy_window_s": 3.0, "seed": 1234},
            "models": models,
            "decoding": STANDARD_DECODING,
            "studies": studies,
            "analysis": {
                "baseline_model": "tiny-qwen3",
                "reference_cell": {
                    "context": 256,
                    "gen": 16,
                    "decoding": "greedy",
                    "dtype": "bfloat16",
                    "backend": "eager",
                },
            },
            "report": {"title": "deploybench — synthetic CPU run (tiny random-weight models)"},
        }
    m = list(_GPU_MODELS)
    models = {
        name: {
            "source": "random",
            "architecture": f"workflow/architectures/{name}.json",
            "attn_implementation": "eager",
            **({"experts_implementation": "grouped_mm"} if name.startswith("gpt-oss") else {}),
            "metadata": _META[name],
        }
        for name in m
    }
    studies = {
        "main": {"kind": "main_comparison", "models": m, "contexts": [128, 512, 1024, 2048], "gen": [64]},
        "context_scaling": {
            "kind": "context_scaling",
            "models": m[:1],
            "contexts": [512, 1024, 2048, 4096],
            "gen": [64],
        },
        "decoding": {
            "kind": "decoding_ablation",
            "models": m[:1],
            "contexts": [128],
            "gen": [64],
            "decoding": list(STANDARD_DECODING),
        },
        "precision": {
            "kind": "precision_sweep",
            "models": m[:1],
            "contexts": [128],
            "gen": [64],
            "dtypes": ["bfloat16", "float16", "float32"],
        },
        "serving": {
            "kind": "backend_comparison",
            "models": m[:2],
            "contexts": [2048],
            "gen": [64],
            "backends": ["eager", "compiled"],
        },
    }
    return {
        "measurement": {"device": "auto", "warmup_runs": 1, "n_runs": 5, "min_energy_window_s": 3.0, "seed": 1234},
        "models": models,
        "decoding": STANDARD_DECODING,
        "studies": studies,
        "analysis": {
            "baseline_model": "qwen3-32b",
            "reference_cell": {
                "context": 2048,
                "gen": 64,
                "decoding": "greedy",
                "dtype": "bfloat16",
                "backend": "eager",
            },
            "external_tables": [
                {"name": "arxiv-2508.16700", "format": "arxiv_2508_16700", "path": "reference/arxiv-2508.16700"}
            ],
        },
        "report": {"title": "deploybench — synthetic demo (not measurements)"},
    }


def _cells(config: dict) -> list[tuple]:
    out = []
    for st in config["studies"].values():
        for m in st["models"]:
            for b in st.get("backends", ["eager"]):
                for d in st.get("dtypes", ["bfloat16"]):
                    for c in st["contexts"]:
                        for g in st["gen"]:
                            for dec in st.get("decoding", ["greedy"]):
                                key = (m, b, d, int(c), int(g), dec)
                                if key not in out:
                                    out.append(key)
    return out


def _pct(vals: list[float], q: float) -> float:
    s = sorted(vals)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _env(variant: str) -> dict:
    if variant == "cpu":
        return {
            "device": "cpu",
            "device_name": "AMD EPYC 7B13 (2 vCPU)",
            "torch_version": "2.13.0+cpu",
            "transformers_version": "5.17.0",
            "python_version": "3.11.2",
            "hostname": "ci-runner",
        }
    return {
        "device": "cuda",
        "device_name": "NVIDIA H200",
        "device_uuid": "GPU-00000000-demo",
        "driver_version": "570.133.20",
        "cuda_version": "12.8",
        "torch_version": "2.11.0",
        "transformers_version": "5.17.0",
        "python_version": "3.12.3",
        "hostname": "gpu-node-1",
    }


def demo_rows(variant: str = "gpu") -> list[dict]:
    """Rows of ours in the result schema (deploybench.schema), one per cell of demo_config(variant)."""
    config = demo_config(variant)
    specs = _CPU_MODELS if variant == "cpu" else _GPU_MODELS
    rng = random.Random(1234)
    rows = []
    for i, (m, backend, dtype, ctx, gen, dec) in enumerate(_cells(config)):
        mtype, total, active, weights, kv_tok, decode0, ttft2048, power = specs[m]
        cell_id = f"{m}/{backend}-{dtype}/c{ctx}-g{gen}-{dec}"
        row = {
            "cell_id": cell_id,
            "model": m,
            "backend": backend,
            "dtype": dtype,
            "context_tokens": ctx,
            "gen_tokens": gen,
            "decoding": dec,
            "spec_json": "{}",
            "harness_version": "1",
            "schema_version": SCHEMA_VERSION,
            "source": "deploybench",
            **STANDARD_DECODING[dec],
            "seed": 1234,
            "weights_source": "random",
            "model_ref": f"workflow/architectures/{m}.json",
            "model_type": mtype,
            "total_params": total,
            "active_params": active,
            "active_params_source": "counted",
            "experts_implementation": "grouped_mm" if mtype == "gpt_oss" else "n/a",
            "experts_read_per_token": "routed" if mtype == "gpt_oss" else "n/a",
            "attn_implementation": "eager",
            "cache_implementation": "static" if backend == "compiled" else "dynamic",
            "prompt_mode": "random_ids",
            "warmup_runs": 1,
            "n_runs": 5,
            "percentile_method": "numpy.percentile, linear interpolation (type 7)",
            **_env(variant),
            "started_at": f"2026-11-29T03:{10 + i // 60:02d}:{i % 60:02d}Z",
            "load_s": 12.5 if variant == "gpu" else 0.4,
        }
        if m == "gpt-oss-20b" and dtype == "float16":
            row |= {
                "status": "failed",
                "failure_kind": "unsupported",
                "error": "RuntimeError: expected scalar type BFloat16 but found Half "
                "(grouped_mm experts need bfloat16)",
                "valid": False,
                "invalid_reasons": ["failed"],
            }
            rows.append(row)
            continue
        if variant == "cpu" and m == "tiny-gpt-oss" and dtype == "float16":
            row |= {
                "status": "failed",
                "failure_kind": "unsupported",
                "error": "float16 matmul is not supported on this CPU build",
                "valid": False,
                "invalid_reasons": ["failed"],
            }
            rows.append(row)
            continue
        speed = decode0 / (1.0 + ctx / 16000.0)
        speed *= {"float32": 0.52, "float16": 1.0, "bfloat16": 1.0}[dtype]
        speed *= 2.9 if backend == "compiled" else 1.0
        speed *= {"greedy": 1.0, "top_p": 0.985, "top_k": 0.99, "high_temp": 0.975, "low_temp": 0.98}.get(dec, 0.98)
        ttft = (
            ttft2048
            * (0.12 + 0.88 * ctx / 2048.0)
            * (1.9 if dtype == "float32" else 1.0)
            * (0.6 if backend == "compiled" else 1.0)
        )
        tpot = 1000.0 / speed
        e2e = [ttft + (gen - 1) * tpot * rng.uniform(0.99, 1.04) for _ in range(5)]
        itl = [
            tpot * math.exp(rng.gauss(0.0, 0.05)) * (3.0 if rng.random() < 0.01 else 1.0) for _ in range(5 * (gen - 1))
        ]
        ttfts = [ttft * rng.uniform(0.98, 1.03) for _ in range(5)]
        p50 = _pct(e2e, 0.5)
        row |= {
            "status": "ok",
            "valid": True,
            "invalid_reasons": [],
            "context_tokens_measured": ctx,
            "gen_tokens_measured": gen,
            "ttft_ms": _pct(ttfts, 0.5),
            "ttft_ms_samples": ttfts,
            "e2e_ms_p50": p50,
            "e2e_ms_p95": _pct(e2e, 0.95),
            "e2e_ms_p99": _pct(e2e, 0.99),
            "e2e_ms_samples": e2e,
            "decode_tps": speed,
            "decode_tps_samples": [speed * rng.uniform(0.98, 1.02) for _ in range(5)],
            "decode_tps_cv": 0.012,
            "tpot_ms": tpot,
            "itl_ms_p50": _pct(itl, 0.5),
            "itl_ms_p95": _pct(itl, 0.95),
            "itl_ms_p99": _pct(itl, 0.99),
            "itl_ms_samples": itl,
            "e2e_tps": gen / (p50 / 1000.0),
            "compile_s": (77.0 if mtype == "gpt_oss" else 106.0) if backend == "compiled" else None,
        }
        if variant == "cpu":
            row |= {
                "memory_null_reason": "device is cpu: torch.cuda allocator statistics do not exist",
                "host_peak_rss_bytes": 610_000_000 + ctx * 40_000,
                "energy_source": "unavailable: no NVML device (cpu)",
            }
        else:
            w = weights * (2.0 if dtype == "float32" else 1.0)
            kv = kv_tok * (ctx + gen) * (2.0 if dtype == "float32" else 1.0)
            act = 0.35e9 + ctx * 0.9e6
            peak = w + kv + act
            e2e_s = p50 / 1000.0
            runs = max(1, math.ceil(3.0 / e2e_s))
            window = runs * e2e_s * rng.uniform(1.0, 1.02)
            pw = power * (1.05 if backend == "compiled" else 1.0) * rng.uniform(0.98, 1.02)
            energy = pw * window
            idle = 76.0
            bw = 4.27e12
            bpt = active * (4 if dtype == "float32" else 2) + kv_tok * ctx
            roof = bw / bpt
            row |= {
                "weights_bytes": int(w),
                "peak_allocated_bytes": int(peak),
                "peak_reserved_bytes": int(peak * 1.04),
                "kv_cache_bytes": int(kv),
                "kv_cache_bytes_analytic": int(kv),
                "host_peak_rss_bytes": 3_200_000_000,
                "energy_source": "nvml_total_energy_counter",
                "energy_window_s": window,
                "energy_runs": runs,
                "energy_tokens": runs * gen,
                "energy_j": energy,
                "energy_j_net": energy - idle * window,
                "idle_power_w": idle,
                "avg_power_w": pw,
                "sampler_energy_j": energy * 1.01,
                "sampler_avg_power_w": pw * 1.01,
                "sampler_n_samples": int(window * 100),
                "energy_counter_sampler_rel_diff": 0.01,
                "j_per_1k_tokens": energy / (runs * gen) * 1000.0,
                "j_per_1k_tokens_net": (energy - idle * window) / (runs * gen) * 1000.0,
                "tokens_per_j": runs * gen / energy,
                "gpu_temp_c_start": 41.0,
                "gpu_temp_c_end": 47.0,
                "sm_clock_mhz_start": 1980.0,
                "sm_clock_mhz_end": 1980.0,
                "throttle_reasons": [],
                "other_gpu_processes": 0,
                "mem_bandwidth_bytes_per_s": bw,
                "decode_bytes_per_token": float(bpt),
                "roofline_tps": roof,
                "roofline_fraction": speed / roof,
            }
        if m == "gpt-oss-20b" and ctx == 4096:
            row |= {
                "valid": False,
                "invalid_reasons": ["prompt length 4095 after the chat template differs from the requested 4096"],
                "context_tokens_measured": 4095,
            }
        rows.append(row)
    return rows


def demo_imported_rows() -> list[dict]:
    """Study-like rows (source import:...) at the main grid of the GPU demo, H100 NVL, pretrained."""
    rows = []
    rng = random.Random(99)
    for m, (_, total, active, weights, kv_tok, decode0, ttft2048, power) in _GPU_MODELS.items():
        for ctx in (128, 512, 1024, 2048):
            gen = 64
            speed = decode0 * 1.15 / (1.0 + ctx / 9000.0)
            ttft = ttft2048 * 0.9 * (0.1 + 0.9 * ctx / 2048.0)
            p50 = ttft + (gen - 1) * 1000.0 / speed
            e2e_tps = gen / (p50 / 1000.0)
            artifact = m == "yi-34b" and ctx == 128
            raw = 1000.0 / ttft * rng.uniform(0.99, 1.01) if artifact else e2e_tps
            j1k = power * 0.8 * (p50 / 1000.0) / gen * 1000.0
            rows.append(
                {
                    "cell_id": f"{m}/eager-bfloat16/c{ctx}-g{gen}-greedy",
                    "model": m,
                    "backend": "eager",
                    "dtype": "bfloat16",
                    "context_tokens": ctx,
                    "gen_tokens": gen,
                    "decoding": "greedy",
                    "spec_json": "{}",
                    "schema_version": SCHEMA_VERSION,
                    "source": IMPORT_SOURCE,
                    "status": "ok",
                    "valid": None,
                    "notes": [
                        "e2e_tps is the study's TPOT_tokps: gen / full-generate time, prefill included",
                        "e2e_ms_p95 and e2e_ms_p99 both equal the maximum over 10 runs",
                        f"one-off note for {m} at {ctx}",
                    ],
                    "do_sample": False,
                    "weights_source": "pretrained",
                    "model_ref": {
                        "gpt-oss-20b": "openai/gpt-oss-20b",
                        "qwen3-32b": "Qwen/Qwen3-32B",
                        "yi-34b": "01-ai/Yi-34B",
                    }[m],
                    "total_params": round(total / 1e9) * 1_000_000_000,
                    "active_params": round(active / 1e8) * 100_000_000,
                    "active_params_source": "study figure",
                    "prompt_mode": "chat_template",
                    "n_runs": 10,
                    "warmup_runs": 0,
                    "ttft_ms": ttft,
                    "e2e_ms_p50": p50,
                    "e2e_ms_p95": p50 * 1.04,
                    "e2e_ms_p99": p50 * 1.04,
                    "e2e_tps": raw,
                    "weights_bytes": int(weights * 0.955),
                    "peak_allocated_bytes": int(weights * 0.955 + kv_tok * 4 * ctx),
                    "energy_source": "nvidia-smi power.draw at start and end of each run (study)",
                    "j_per_1k_tokens": j1k,
                    "tokens_per_j": 1000.0 / j1k,
                    "avg_power_w": power * 0.8,
                    "device": "cuda",
                    "device_name": "NVIDIA H100 NVL",
                    "torch_version": "2.7.1",
                    "transformers_version": "4.55.2",
                }
            )
    return rows


APE = {
    "ape_e2e_tps_per_active_b": ("e2e_tps", "active"),
    "ape_decode_tps_per_active_b": ("decode_tps", "active"),
    "ape_inv_ttft_per_s_per_active_b": ("inv_ttft", "active"),
    "ape_tokens_per_j_per_active_b": ("tokens_per_j", "active"),
    "e2e_tps_per_peak_gb": ("e2e_tps", "peak_gb"),
}
RATIO_METRICS = ["e2e_tps", "decode_tps", "ttft_ms", "peak_allocated_bytes", "j_per_1k_tokens", *APE]


def add_derived(df: pd.DataFrame, baseline: str | dict | None) -> pd.DataFrame:
    """TPOT-check columns, APE columns and ratio_to_baseline_* (an independent, simple version)."""
    out = df.copy()
    ok = out["status"] == "ok"

    def col(name):
        return pd.to_numeric(out[name], errors="coerce") if name in out else pd.Series(float("nan"), index=out.index)

    # TPOT artifact: a tok/s figure within 3% of 1000/ttft is recomputed as gen / p50 s.
    inv = 1000.0 / col("ttft_ms")
    raw = col("e2e_tps")
    recomputed = col("gen_tokens") / (col("e2e_ms_p50") / 1000.0)
    artifact = ok & ((raw - inv).abs() / inv <= 0.03)
    out["e2e_tps_raw"] = raw
    out["e2e_tps_recomputed"] = recomputed
    out["tpot_artifact"] = artifact.astype(bool)
    out["e2e_tps"] = raw.where(~artifact, recomputed)
    out["tpot_check"] = [
        (
            f"e2e_tps {r:.4g} is within 3% of 1000/ttft_ms = {i:.4g}: TPOT artifact; recomputed as gen / p50 s = "
            f"{c:.4g}"
            if a
            else (
                f"ok: e2e_tps {r:.4g} is {abs(r - i) / i:.0%} off 1000/ttft_ms"
                if s == "ok" and r == r and i == i
                else "not checked: failed row"
            )
        )
        for r, i, c, a, s in zip(raw, inv, recomputed, artifact, out["status"])
    ]
    active_b = col("active_params") / 1e9
    base = {
        "e2e_tps": col("e2e_tps"),
        "decode_tps": col("decode_tps"),
        "inv_ttft": 1000.0 / col("ttft_ms"),
        "tokens_per_j": col("tokens_per_j"),
    }
    peak_gb = col("peak_allocated_bytes") / 1e9
    for name, (metric, den) in APE.items():
        out[name] = (base[metric] / (active_b if den == "active" else peak_gb)).where(ok)
    # ratios to the baseline model at the same (source, backend, dtype, context, gen, decoding)
    key = ["source", "backend", "dtype", "context_tokens", "gen_tokens", "decoding"]
    names = out["source"].map(lambda s: baseline.get(s) if isinstance(baseline, dict) else baseline)
    is_base = (out["model"] == names) & ok
    base_rows = out[is_base].set_index(key)
    for metric in RATIO_METRICS:
        vals = (
            pd.to_numeric(out[metric], errors="coerce") if metric in out else pd.Series(float("nan"), index=out.index)
        )
        lookup = pd.to_numeric(base_rows[metric], errors="coerce") if metric in base_rows else pd.Series(dtype=float)
        keys = zip(*(out[k].tolist() for k in key))
        bvals = [lookup.get(k, float("nan")) if len(lookup) else float("nan") for k in keys]
        out[f"ratio_to_baseline_{metric}"] = (vals / pd.Series(bvals, index=out.index, dtype=float)).where(ok)
    return out


def demo_frame(variant: str = "gpu", imported: bool = True) -> pd.DataFrame:
    rows = demo_rows(variant)
    if variant == "gpu" and imported:
        rows += demo_imported_rows()
    df = to_table(rows).to_pandas()
    base = demo_config(variant)["analysis"]["baseline_model"]
    return add_derived(df, {"deploybench": base, IMPORT_SOURCE: base})
