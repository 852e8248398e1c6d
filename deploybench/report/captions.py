"""The report's prose: captions, section intros and notes, kept in `captions.yaml` beside the templates.

Entries are `str.format` templates; the table and figure builders fill their placeholders
({study}, {fixed}, {anchor}, ...). A placeholder with no value is an error, not a blank.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "workflow" / "templates"
_active = [DEFAULT_DIR]


def use(templates_dir: Path | None) -> None:
    """Read the prose from this templates folder from now on (render_report sets it)."""
    _active[0] = Path(templates_dir) if templates_dir else DEFAULT_DIR


@cache
def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def text(section: str, key: str, **fields) -> str:
    """One entry of captions.yaml, its placeholders filled; folded YAML lines are joined."""
    return " ".join(str(entries(section)[key]).split()).format(**fields)


def entries(section: str) -> dict:
    return _load(_active[0] / "captions.yaml")[section]
