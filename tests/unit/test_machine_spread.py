"""benchmarks/machine_spread.py: the cells two machines share, their spread and what explains it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from deploybench.results.schema import write_row

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # machine_spread imports a sibling
spec = importlib.util.spec_from_file_location(
    "machine_spread", Path(__file__).resolve().parents[2] / "benchmarks" / "machine_spread.py"
)
machine_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(machine_spread)

CELL = "qwen3-32b/compiled_loop-bfloat16/c2048-g64-greedy"


def _run(tmp_path, name, **row):
    write_row({"cell_id": CELL, "status": "ok", **row}, tmp_path / name / "cells" / f"{name}.parquet")
    return tmp_path / name


def test_spread_of_a_shared_cell_with_its_explaining_columns(tmp_path, capsys):
    fast = _run(tmp_path, "a", decode_tps=48.3, device_uuid="GPU-a", power_violation_s=0.0)
    slow = _run(tmp_path, "b", decode_tps=41.0, device_uuid="GPU-b", power_violation_s=2.5)
    lone = _run(tmp_path, "c", decode_tps=10.0)
    (tmp_path / "c" / "cells" / "c.parquet").unlink()
    runs = {str(p): machine_spread.rows_of(p) for p in (fast, slow, lone)}
    records = machine_spread.spread_table(runs)
    assert [r["decode_tps"] for r in records] == [48.3, 41.0]
    assert records[0]["spread"] == records[1]["spread"] == 48.3 / 41.0
    assert [r["power_violation_s"] for r in records] == [0.0, 2.5]
    assert machine_spread.main([str(fast), str(slow)]) == 0
    assert "power_violation_s (s)" in capsys.readouterr().out
    assert machine_spread.main([str(fast)]) == 1  # nothing shared


def test_markdown_table_names_each_machine_and_leaves_missing_figures_as_dashes(tmp_path, capsys):
    a = _run(tmp_path, "a", decode_tps=48.3, device_name="NVIDIA H100", device_uuid="GPU-aaaaaaaa-1234", launch_us=6.0)
    b = _run(tmp_path, "b", decode_tps=41.0, device_name="NVIDIA H200", device_uuid="GPU-bbbbbbbb-5678")
    assert machine_spread.main([str(a), str(b), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[2].startswith(f"| {CELL} | NVIDIA H100 `GPU-aaaaaaaa`")
    assert "| 48.3 |" in lines[2] and "| 6.0 |" in lines[2] and lines[2].endswith(f"| {48.3 / 41.0:.3f} |")
    assert lines[3].startswith("|  | NVIDIA H200 `GPU-bbbbbbbb`") and "| - |" in lines[3]  # no launch_us
    c = _run(tmp_path, "c", decode_tps=34.1, kernels_per_token=1353.0, gpu_kernel_ms_per_token=28.61)
    assert machine_spread.main([str(a), str(c), "--markdown"]) == 0
    assert "| 1,353 (28.6) |" in capsys.readouterr().out.splitlines()[3]  # the step's launches and kernel ms


def test_the_readme_spread_table_is_the_committed_runs():
    """The README's machine-spread table is benchmarks/machine_spread.py's over the four committed runs."""
    root = Path(__file__).resolve().parents[2]
    runs = [
        root / "reference-run" / name
        for name in (
            "h200-2026-12-01-attribution",
            "serving-2026-12-07",
            "h100-2026-12-07-compiled-loop",
            "h100-2026-12-08-compiled-loop",
        )
    ]
    table = machine_spread.markdown(
        machine_spread.spread_table({str(p): machine_spread.rows_of(p) for p in runs}, "compiled_loop")
    )
    readme = (root / "README.md").read_text()
    assert table in readme
    assert table in (runs[-1] / "README.md").read_text()


def test_kernels_name_what_one_machines_step_runs_and_the_others_does_not(tmp_path, capsys):
    """Two H100s, one cell, the same software: one machine's cuBLAS splits a GEMV and adds a reducing kernel."""
    gemv = {"name": "nvjet_sm90_tst_256x8_64x6_4x1_v_bz_TNT", "calls": 128.0, "us": 20000.0}
    reduce = {"name": "splitKreduce_kernel", "calls": 128.0, "us": 900.0}
    norm = {"name": "triton_red_fused_rsqrt_1", "calls": 129.0, "us": 400.0}
    plain = _run(tmp_path, "a", decode_tps=37.9, device_name="NVIDIA H100", device_uuid="GPU-d93971c7",
                 step_kernels_json=json.dumps([gemv, norm]))  # fmt: skip
    split = _run(tmp_path, "b", decode_tps=34.1, device_name="NVIDIA H100", device_uuid="GPU-be85161f",
                 step_kernels_json=json.dumps([gemv | {"us": 23000.0}, reduce, norm]))  # fmt: skip
    assert machine_spread.main([str(plain), str(split), "--markdown", "--kernels"]) == 0
    out = capsys.readouterr().out
    assert "A NVIDIA H100 `GPU-d93971c7`" in out and "B NVIDIA H100 `GPU-be85161f`" in out
    table = out[out.index("| kernel |") :]
    assert table.index("nvjet_sm90") < table.index("splitKreduce") < table.index("triton_red")  # most time apart first
    assert "| `splitKreduce_kernel` | 0 | 128 | 0 | 900.0 | B |" in table
    assert "calls per step A 257, B 385" in table
    bare = _run(tmp_path, "c", decode_tps=30.0)
    assert machine_spread.main([str(plain), str(bare), "--kernels"]) == 0
    assert "fewer than two of its rows hold their step's kernels" in capsys.readouterr().out
