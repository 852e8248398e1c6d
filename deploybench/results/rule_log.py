"""The log file of a localrule (consolidate, correct_tpot, ape): what it read and wrote, and on failure the
error and its traceback, where Snakemake's "check log" points."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def rule_log(path: str | Path, name: str) -> Iterator[logging.Logger]:
    """Log to `path` (truncated) for the body of the `with`; an exception is logged with its traceback, then
    raised again (so Snakemake shows it too)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    log = logging.getLogger(f"deploybench.{name}")
    try:
        yield log
    except BaseException as exc:
        log.error("failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        raise
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
