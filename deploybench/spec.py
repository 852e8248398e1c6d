"""Cell specification: what one measurement is, validated before any model is loaded.

A cell spec is a plain dict (it travels as canonical JSON through Snakemake params and the CLI);
`validate_cell` checks every field and raises SpecError naming the offending one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DTYPES = ("bfloat16", "float16", "float32")
# eager: generate() + dynamic cache; compiled: generate() + static cache (transformers compiles the
# decode step on GPU); compiled_loop: our own loop of a compiled step, no host sync per token.
BACKENDS = ("eager", "compiled", "compiled_loop")
STATIC_CACHE_BACKENDS = ("compiled", "compiled_loop")
SOURCES = ("random", "pretrained")
EXPERTS_IMPLEMENTATIONS = ("grouped_mm", "batched_mm", "eager")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

MODEL_KEYS = {
    "source",
    "architecture",
    "id",
    "revision",
    "trust_remote_code",
    "dtype",
    "active_params",
    "experts_implementation",
    "attn_implementation",
    "max_position_embeddings",
    "metadata",
}
DECODING_KEYS = {"do_sample", "temperature", "top_p", "top_k"}
# The study's five decoding modes (its released script's settings); configs may define others.
STANDARD_DECODING = {
    "greedy": {"do_sample": False},
    "top_p": {"do_sample": True, "temperature": 0.7, "top_p": 0.9},
    "top_k": {"do_sample": True, "temperature": 0.7, "top_k": 50},
    "high_temp": {"do_sample": True, "temperature": 1.0, "top_p": 0.95},
    "low_temp": {"do_sample": True, "temperature": 0.3, "top_p": 0.8},
}
MEASUREMENT_DEFAULTS = {
    "device": "auto",
    "warmup_runs": 1,
    "n_runs": 5,
    "min_energy_window_s": 3.0,
    "idle_cooldown_s": 2.0,
    "idle_window_s": 2.0,
    "seed": 1234,
    "measure_bandwidth": True,
}


class SpecError(ValueError):
    """A cell, model or decoding spec is wrong; the message names the field."""


def _fail(field: str, why: str):
    raise SpecError(f"{field}: {why}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_model(name: str, model: dict, where: str = "models") -> dict:
    """Check one model entry; returns it unchanged. Paths are checked to exist."""
    field = f"{where}.{name}"
    if not isinstance(model, dict):
        _fail(field, "must be a mapping")
    if not NAME_RE.match(str(name)):
        _fail(field, "model name may only hold letters, digits, '.', '_' and '-'")
    unknown = set(model) - MODEL_KEYS
    if unknown:
        _fail(
            f"{field}.{sorted(unknown)[0]}",
            f"unknown key (known: {sorted(MODEL_KEYS)})",
        )
    source = model.get("source")
    if source not in SOURCES:
        _fail(f"{field}.source", f"must be one of {SOURCES}, got {source!r}")
    if source == "random":
        arch = model.get("architecture")
        if not arch:
            _fail(f"{field}.architecture", "required for source: random")
        if not Path(arch).is_file():
            _fail(f"{field}.architecture", f"architecture card {arch!r} does not exist")
        try:
            card = json.loads(Path(arch).read_text())
        except json.JSONDecodeError as exc:
            _fail(f"{field}.architecture", f"card {arch!r} is not valid JSON: {exc}")
        if not isinstance(card, dict) or "model_type" not in card:
            _fail(f"{field}.architecture", f"card {arch!r} has no model_type")
    else:
        ref = model.get("id")
        if not ref or not isinstance(ref, str):
            _fail(
                f"{field}.id",
                "required for source: pretrained (hub id or local directory)",
            )
        looks_local = ref.startswith((".", "/", "~")) or Path(ref).exists()
        if looks_local and not Path(ref).expanduser().is_dir():
            _fail(f"{field}.id", f"local model directory {ref!r} does not exist")
    if model.get("dtype") is not None and model["dtype"] not in DTYPES:
        _fail(f"{field}.dtype", f"must be one of {DTYPES}, got {model['dtype']!r}")
    active = model.get("active_params")
    if active is not None and (not _is_int(active) or active < 1):
        _fail(
            f"{field}.active_params",
            "must be a positive integer (parameters, not billions)",
        )
    experts = model.get("experts_implementation")
    if experts is not None and experts not in EXPERTS_IMPLEMENTATIONS:
        _fail(
            f"{field}.experts_implementation",
            f"must be one of {EXPERTS_IMPLEMENTATIONS}",
        )
    if "trust_remote_code" in model and not isinstance(model["trust_remote_code"], bool):
        _fail(f"{field}.trust_remote_code", "must be true or false")
    return model


def validate_decoding(name: str, decoding: dict, where: str = "decoding") -> dict:
    field = f"{where}.{name}"
    if not isinstance(decoding, dict):
        _fail(field, "must be a mapping")
    unknown = set(decoding) - DECODING_KEYS
    if unknown:
        _fail(
            f"{field}.{sorted(unknown)[0]}",
            f"unknown decoding parameter (known: {sorted(DECODING_KEYS)})",
        )
    do_sample = decoding.get("do_sample", False)
    if not isinstance(do_sample, bool):
        _fail(f"{field}.do_sample", "must be true or false")
    temp = decoding.get("temperature")
    if temp is not None and (not isinstance(temp, (int, float)) or isinstance(temp, bool) or temp <= 0):
        _fail(f"{field}.temperature", "must be a number > 0")
    top_p = decoding.get("top_p")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        _fail(f"{field}.top_p", "must be in (0, 1]")
    top_k = decoding.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        _fail(f"{field}.top_k", "must be an integer >= 1")
    if not do_sample and any(decoding.get(k) is not None for k in ("temperature", "top_p", "top_k")):
        _fail(f"{field}.do_sample", "sampling parameters given but do_sample is false")
    return decoding


def validate_measurement(measurement: dict) -> dict:
    """Fill defaults and check the measurement settings."""
    unknown = set(measurement) - set(MEASUREMENT_DEFAULTS)
    if unknown:
        _fail(
            f"measurement.{sorted(unknown)[0]}",
            f"unknown key (known: {sorted(MEASUREMENT_DEFAULTS)})",
        )
    merged = {**MEASUREMENT_DEFAULTS, **measurement}
    if merged["device"] not in ("auto", "cpu", "cuda"):
        _fail("measurement.device", "must be auto, cpu or cuda")
    for key in ("warmup_runs", "n_runs", "seed"):
        minimum = 1 if key == "n_runs" else 0
        if not _is_int(merged[key]) or merged[key] < minimum:
            _fail(f"measurement.{key}", f"must be an integer >= {minimum}")
    for key in ("min_energy_window_s", "idle_cooldown_s", "idle_window_s"):
        value = merged[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            _fail(f"measurement.{key}", "must be a number >= 0")
    return merged


def validate_cell(cell: dict) -> dict:
    """Validate a full cell spec (model, decoding, measurement, axes)."""
    for key in (
        "model_name",
        "model",
        "decoding_name",
        "decoding",
        "measurement",
        "context",
        "gen",
        "dtype",
        "backend",
    ):
        if key not in cell:
            _fail(key, "missing from the cell spec")
    validate_model(cell["model_name"], cell["model"])
    validate_decoding(cell["decoding_name"], cell["decoding"])
    validate_measurement(cell["measurement"])
    for key in ("context", "gen"):
        if not _is_int(cell[key]) or cell[key] < 1:
            _fail(key, f"must be an integer >= 1, got {cell[key]!r}")
    if cell["dtype"] not in DTYPES:
        _fail("dtype", f"must be one of {DTYPES}, got {cell['dtype']!r}")
    if cell["backend"] not in BACKENDS:
        _fail("backend", f"must be one of {BACKENDS}, got {cell['backend']!r}")
    return cell


def canonical_json(obj) -> str:
    """Sorted keys, no spaces, whole floats written as ints: equal settings give equal text."""
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"))


def _normalise(obj):
    if isinstance(obj, dict):
        return {str(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    return obj


def cell_id(cell: dict) -> str:
    axes = f"c{cell['context']}-g{cell['gen']}-{cell['decoding_name']}"
    return f"{cell['model_name']}/{cell['backend']}-{cell['dtype']}/{axes}"
