"""benchmarks/gpu_sitting.sh, the per-call driver of a lent GPU machine, rehearsed on CPU: from a copy of the tree,
one call runs a pytest selection and one study's cells, and leaves in $OUT what comes back from such a machine
(the logs and the packed results); then, from those results alone, the sitting's own config
(scripts/study_cells.py --config-out) plans its report without measuring anything again."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from tests.fixtures.study_cells import run_study_cells

from .conftest import REPO, copy_workflow

pytestmark = pytest.mark.workflow

STUDY = {"kind": "context_scaling", "models": ["m-qwen3"], "contexts": [16, 48], "gen": [4]}


def _study_cells(wf, *args: str) -> list[str]:
    run = run_study_cells("config.yaml", *args, cwd=wf.root, env=wf.env)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def _sitting_env(wf, tmp_path, **settings: str) -> dict:
    """A copy of benchmarks/ in the workflow copy, and the environment a call of gpu_sitting.sh runs in there:
    $OUT and $HOME under tmp_path, python3 this interpreter, no engine bundle parts; `settings` on top."""
    shutil.copytree(REPO / "benchmarks", wf.root / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "home").mkdir(exist_ok=True)
    return {
        **wf.env,
        "OUT": str(tmp_path / "out"),
        "HOME": str(tmp_path / "home"),
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",  # python3: this interpreter
        "PARTS_FROM": str(tmp_path / "no-parts"),
        **settings,
    }


def test_a_sitting_call_brings_back_its_logs_and_cells_and_its_report_measures_nothing(small_workflow, tmp_path):
    wf = small_workflow
    config = wf.read_config()
    config["studies"]["scaling"] = STUDY
    wf.write_config(config)
    (wf.root / "sitting_tests").mkdir()
    (wf.root / "sitting_tests/test_here.py").write_text("def test_here():\n    assert True\n")
    cells = _study_cells(wf, "scaling")
    assert len(cells) == 2

    out = tmp_path / "out"
    env = _sitting_env(
        wf,
        tmp_path,
        BUDGET_S="300",
        PYTEST_ARGS="sitting_tests",
        BENCHMARK_ARGS="compiled_loop_variants.py --architecture ../workflow/architectures/tiny-qwen3.json "
        "--context 24 --gen 4 --dtype float32 --runs 1 --ttft-runs 1 --only --out ../results/benchmarks/variants.json",
        SNAKEMAKE_ARGS=f"--configfile config.yaml --cores 1 --resources gpu=1 --keep-going {' '.join(cells)}",
    )
    call = subprocess.run(
        ["bash", "benchmarks/gpu_sitting.sh"], cwd=wf.root, env=env, capture_output=True, text=True, timeout=600
    )
    assert call.returncode == 0, call.stdout[-3000:] + call.stderr[-3000:]
    assert re.search(r"call wall s: \d+", call.stdout)

    pytest_log = (out / "pytest-gpu.log").read_text()
    assert pytest_log.startswith("== ") and "pytest sitting_tests" in pytest_log
    assert "test_here PASSED" in pytest_log and "1 passed" in pytest_log
    assert "2 of 2 steps (100%) done" in (out / "snakemake.log").read_text()
    assert "fastest_matching" in (out / "benchmark.log").read_text()  # the baseline alone: --only names none
    assert "torch" in (out / "machine.txt").read_text()  # no nvidia-smi here: the versions line only
    with tarfile.open(out / "state.tar.gz") as state:
        packed = set(state.getnames())
    assert set(cells) <= packed and "results/benchmarks/variants.json" in packed

    # A call whose budget is spent starts neither step (`timeout 0` would be no limit) and still packs the results.
    spent = subprocess.run(
        ["bash", "benchmarks/gpu_sitting.sh"],
        cwd=wf.root,
        env={**env, "OUT": str(tmp_path / "out-spent"), "BUDGET_S": "5"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert spent.returncode == 0, spent.stdout[-3000:] + spent.stderr[-3000:]
    assert "pytest not started" in (tmp_path / "out-spent/pytest-gpu.log").read_text()
    assert "snakemake not started" in (tmp_path / "out-spent/snakemake.log").read_text()
    assert "benchmark not started" in (tmp_path / "out-spent/benchmark.log").read_text()
    with tarfile.open(tmp_path / "out-spent/state.tar.gz") as state:
        assert set(cells) <= set(state.getnames())

    # The report, elsewhere, from the returned results and the config cut to the sitting's study.
    render = copy_workflow(tmp_path / "render")
    render.write_config(config)
    with tarfile.open(out / "state.tar.gz") as state:
        state.extractall(render.root, filter="data")
    assert _study_cells(render, "scaling", "--config-out", "sitting.yaml") == cells
    plan = render.snakemake("-n", "--configfile", "sitting.yaml", "--replace-workflow-config").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.split("Job stats:")[1], re.MULTILINE))
    assert "measure" not in jobs and jobs["report"] == "1", jobs


def test_a_call_cut_off_by_the_device_still_brings_back_the_results_finished_by_then(tmp_path):
    """The device's own limit kills a call outright (a step that overran its budget): the results are
    packed every 30 s while the steps run, so the cells finished before the kill come back."""
    wf = copy_workflow(tmp_path / "wf")
    env = _sitting_env(wf, tmp_path, PYTEST_ARGS="sitting_tests")
    done = wf.root / "results/cells/m/eager-float32/c16-g4-b1-greedy.parquet"
    done.parent.mkdir(parents=True)
    done.write_bytes(b"a cell finished earlier in the call")
    (wf.root / "sitting_tests").mkdir()
    (wf.root / "sitting_tests/test_long.py").write_text("import time\n\ndef test_long():\n    time.sleep(300)\n")
    out = tmp_path / "out"
    call = subprocess.Popen(
        ["bash", "benchmarks/gpu_sitting.sh"], cwd=wf.root, env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "state.tar.gz").exists() and time.monotonic() < deadline:
            time.sleep(1)
        assert call.poll() is None, "the call ended: the pack seen is the final one, not a periodic one"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(call.pid, signal.SIGKILL)
        call.wait()
    with tarfile.open(out / "state.tar.gz") as state:
        assert "results/cells/m/eager-float32/c16-g4-b1-greedy.parquet" in state.getnames()


def test_snakemake_that_will_not_stop_is_killed_within_the_calls_budget(tmp_path):
    """Told to stop at its budget, Snakemake once stayed past the device's limit (an H100 machine, 2026-12-08): it is
    told 40 s before the budget ends and killed 20 s after, job and all, so the call ends within BUDGET_S."""
    wf = copy_workflow(tmp_path / "wf")
    budget = 75
    env = _sitting_env(wf, tmp_path, BUDGET_S=str(budget), SNAKEMAKE_ARGS="-s deaf.smk --cores 1")
    # A job deaf to SIGTERM: what a cell stuck in a CUDA call looks like to Snakemake.
    (wf.root / "deaf.smk").write_text(
        'rule deaf:\n    output: "results/deaf.txt"\n    shell: "trap \'\' TERM; sleep 600"\n'
    )
    began = time.monotonic()
    call = subprocess.Popen(
        ["bash", "benchmarks/gpu_sitting.sh"], cwd=wf.root, env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        returncode = call.wait(timeout=2 * budget)
    finally:  # a call that overran leaves nothing behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(call.pid, signal.SIGKILL)
    wall = time.monotonic() - began
    assert returncode == 0
    assert wall < budget, f"the call took {wall:.0f} s of a {budget} s budget"
    assert (tmp_path / "out/state.tar.gz").exists()
