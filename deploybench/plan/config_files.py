"""Config files as files: a YAML error names file and line; an overlay that can change nothing is refused.

Snakemake reads the workflow's `configfile:` and every `--configfile` overlay itself; its messages for a
file that is not YAML (a tab in the indentation) or is empty name neither the file nor the line. The
Snakefile reads config.yaml with `load_yaml_file` before Snakemake does; `--configfile` overlays are read by
Snakemake's command line before any workflow code runs, so for them `python -m deploybench check-config FILE`
says where the problem is. `check_overlays` (common.smk) refuses an overlay holding an empty mapping where the
config below it has entries: Snakemake merges overlays key by key, so `studies: {}` would silently keep
every study.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from deploybench.plan.config import ConfigError


def load_yaml_file(path: str | Path) -> dict:
    """The mapping a config file holds, or ConfigError `<file>:<line>:<column>: <why>`."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        why = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        lines = text.splitlines()
        if mark is not None and mark.line < len(lines) and "\t" in lines[mark.line]:
            why += " (a tab: YAML indents with spaces only)"
        raise ConfigError(f"{where}: not valid YAML: {why}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        raise ConfigError(
            f"{path}:1: the file is empty: a config file is a mapping of keys (measurement:, models:, ...)"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a config file is a mapping of keys, this one holds a {type(data).__name__}")
    return data


def empty_mappings(path: str | Path) -> list[tuple[tuple[str, ...], int]]:
    """(key path, line) of every empty mapping (`key: {}`) in a YAML file."""
    found: list[tuple[tuple[str, ...], int]] = []

    def walk(node, keys: tuple[str, ...]) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            here = (*keys, str(key_node.value))
            if isinstance(value_node, yaml.MappingNode) and not value_node.value:
                found.append((here, value_node.start_mark.line + 1))
            walk(value_node, here)

    with open(path) as fh:
        walk(yaml.compose(fh), ())
    return found


def check_overlays(workflow_files: list[str | Path], overlays: list[str | Path], replace: bool = False) -> None:
    """Refuse an overlay's `key: {}` where the config it is laid over has entries under that key.

    `workflow_files`: the Snakefile's configfile(s), merged first unless `replace` (--replace-workflow-config);
    `overlays`: the --configfile files in command-line order, each laid over the ones before it."""
    base: dict = {}
    for path in [] if replace else workflow_files:
        _merge(base, load_yaml_file(path))
    for path in overlays:
        for keys, line in empty_mappings(path):
            below = _lookup(base, keys)
            if isinstance(below, dict) and below:
                key = "config." + ".".join(keys)
                entries = ", ".join(map(str, list(below)[:6])) + (", ..." if len(below) > 6 else "")
                raise ConfigError(
                    f"{path}:{line}: {key}: {{}} changes nothing: Snakemake merges an overlay key by key, so the "
                    f"{len(below)} entries already there ({entries}) all stay. Name the entries to change, or "
                    "run with --replace-workflow-config to use the overlays alone"
                )
        _merge(base, load_yaml_file(path))


def _lookup(config: dict, keys: tuple[str, ...]):
    node = config
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _merge(base: dict, over: dict) -> None:
    """Snakemake's update_config: mappings merged key by key, any other value replaced."""
    for key, value in over.items():
        if isinstance(value, dict):
            base[key] = base[key] if isinstance(base.get(key), dict) else {}
            _merge(base[key], value)
        else:
            base[key] = value
