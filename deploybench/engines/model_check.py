"""Every model of the config built as far as it can be without weights, before any job runs.

A card (or a local checkpoint's config.json) that transformers cannot build used to fail every one of its
cells at run time, and then block consolidation and the report for all models. `check_models` (called by
common.smk when the workflow loads) instantiates each model's transformers config, checks the head shapes
the config classes leave to the forward pass, and builds the model on the meta device (shapes, no memory),
whose parameter count gives the weights estimate of the machine check (deploybench.plan.machine). A problem
is refused as one line naming the model entry's key: `config.models.<name>.architecture: ...`.

transformers imports torch, so this lives outside deploybench/plan; the results are kept in a small cache
keyed by the entry, its files' sha256 and the library versions, so a run whose models did not change
imports neither.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path

from deploybench.enums import WeightsSource
from deploybench.plan.config import ConfigError, WorkflowConfig
from deploybench.plan.spec import ModelEntry, canonical_json, card_digests, local_directory

CHECK_VERSION = "1"  # bump when the checks change: cached verdicts are then made again
_MAX_WHY = 300  # characters of an error text quoted in the one-line message


def check_models(config: WorkflowConfig, cache_path: str | Path | None = None) -> dict[str, int | None]:
    """{model name: total parameters} (None for a hub id: checked where its job downloads it), or ConfigError
    with one line per model that cannot be built."""
    cache = _read_cache(cache_path)
    counts: dict[str, int | None] = {}
    problems = []
    for name, entry in config.models.items():
        key = _cache_key(entry)
        if key is not None and key in cache:
            counts[name] = cache[key]
            continue
        try:
            counts[name] = total_params(entry)
        except ModelBuildError as exc:
            field = "architecture" if entry.source is WeightsSource.RANDOM else "id"
            problems.append(f"config.models.{name}.{field}: {exc}")
            continue
        if key is not None:
            cache[key] = counts[name]
    if problems:
        raise ConfigError("\n".join(problems))
    _write_cache(cache_path, cache)
    return counts


class ModelBuildError(ValueError):
    """A model entry transformers cannot build; the message is one readable line."""


def total_params(entry: ModelEntry) -> int | None:
    """The model's parameter count, from its config built on the meta device; ModelBuildError if it cannot be."""
    raw, what = _raw_config(entry)
    if raw is None:
        return None
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING.keys()), n=3)
        raise ModelBuildError(
            f"{what}: unknown model_type {model_type!r} (transformers {_version('transformers')} has no such "
            f"config; closest: {', '.join(close) or 'none'})"
        )
    from deploybench.engines import models

    try:
        config = models.model_config(entry)
    except Exception as exc:  # the config classes validate their own fields
        raise ModelBuildError(f"{what}: transformers refuses the config: {one_line(exc)}") from None
    _check_heads(config, raw, what)
    try:
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:
        raise ModelBuildError(f"{what}: cannot be built (on the meta device, no weights): {one_line(exc)}") from None
    return sum({id(p): p.numel() for p in model.parameters()}.values())


def _raw_config(entry: ModelEntry) -> tuple[dict | None, str]:
    """The card's (or local config.json's) keys and how to name the file; (None, ...) for a hub id."""
    if entry.source is WeightsSource.RANDOM:
        path, what = Path(entry.architecture), f"card {entry.architecture!r}"
    else:
        directory = local_directory(entry.id)
        if directory is None:
            return None, f"hub id {entry.id!r}"
        path, what = directory / "config.json", f"{str(directory / 'config.json')!r}"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # the config validator checked these; the file may have changed since
        raise ModelBuildError(f"{what}: cannot be read as JSON: {one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise ModelBuildError(f"{what}: not a JSON object")
    return raw, what


def _check_heads(config, raw: dict, what: str) -> None:
    """Shapes the config classes accept and the forward pass refuses (heads against KV heads, hidden size)."""
    config = getattr(config, "text_config", None) or config
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if isinstance(heads, int) and isinstance(kv_heads, int) and kv_heads > 0 and heads % kv_heads:
        raise ModelBuildError(
            f"{what}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads}): "
            "grouped-query attention gives every KV head the same number of query heads"
        )
    if isinstance(heads, int) and heads > 0 and isinstance(hidden, int) and "head_dim" not in raw and hidden % heads:
        raise ModelBuildError(
            f"{what}: hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}) and no head_dim "
            "is given"
        )


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type, whitespace collapsed, a long enumeration cut."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^Class validation error for validator '[^']*': ", "", text)
    if len(text) > _MAX_WHY:
        text = text[: _MAX_WHY - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _cache_key(entry: ModelEntry) -> str | None:
    if entry.source is not WeightsSource.RANDOM and local_directory(entry.id) is None:
        return None
    settings = entry.model_dump(mode="json", exclude_unset=True, exclude={"metadata", "compiled_loop"})
    text = canonical_json(
        {
            "entry": settings,
            "files": card_digests(entry),
            "versions": [_version("transformers"), _version("torch"), CHECK_VERSION],
        }
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _read_cache(path) -> dict:
    if path is None:
        return {}
    try:
        cache = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(path, cache: dict) -> None:
    if path is None:
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(cache, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache: without it the next run checks again
