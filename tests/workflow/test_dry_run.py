"""Dry runs count one measure job per cell of each shipped config (union of studies, deduplicated)."""

from __future__ import annotations

import re

import pytest

from deploybench.plan.config import all_cells, load_config

from .conftest import REPO, copy_workflow

pytestmark = pytest.mark.workflow


def _job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


@pytest.mark.parametrize(("configfile", "cells"), [("config.yaml", 25), ("config/full-size.yaml", 46)])
def test_dry_run_counts_cells(tmp_path, configfile, cells):
    assert len(all_cells(load_config(REPO / configfile))) == cells
    wf = copy_workflow(tmp_path / "wf")
    proc = wf.snakemake("-n", "--configfile", configfile)
    counts = _job_counts(proc.stdout)
    assert counts["measure"] == cells
    assert counts["consolidate"] == counts["correct_tpot"] == counts["ape"] == counts["report"] == 1
