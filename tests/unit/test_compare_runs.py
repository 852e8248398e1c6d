"""benchmarks/compare_runs.py: measured figures may differ between runs, nothing else may."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "compare_runs", Path(__file__).resolve().parents[2] / "benchmarks" / "compare_runs.py"
)
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)

ROW = {"cell_id": "m/eager-bfloat16/c8-g4-greedy", "ttft_ms": 5.0, "kv_cache_bytes": 100, "spec_json": '{"a":1}'}


def test_measured_figures_may_differ():
    problems, differing = compare_runs.compare({"c": ROW}, {"c": {**ROW, "ttft_ms": 6.0}}, [])
    assert problems == [] and differing == {"ttft_ms": (1, "measured (ms)")}


def test_any_other_difference_is_a_problem():
    problems, _ = compare_runs.compare({"c": ROW}, {"c": {**ROW, "kv_cache_bytes": 101}}, [])
    assert len(problems) == 1 and "kv_cache_bytes" in problems[0]


def test_added_spec_keys_can_be_ignored_and_missing_cells_are_problems():
    new = {**ROW, "spec_json": '{"a":1,"card_sha256":"ff"}'}
    assert compare_runs.compare({"c": ROW}, {"c": new}, ["card_sha256"])[0] == []
    assert compare_runs.compare({"c": ROW}, {"c": new}, [])[0]
    assert "only in the old run" in compare_runs.compare({"c": ROW, "d": ROW}, {"c": ROW}, [])[0][0]


def test_a_column_the_new_schema_adds_is_fine_while_null():
    assert compare_runs.compare({"c": ROW}, {"c": {**ROW, "launch_us": None}}, [])[0] == []
    assert compare_runs.compare({"c": ROW}, {"c": {**ROW, "launch_us": 7.0}}, [])[0]
