"""The workflow through profiles/slurm on a real SLURM cluster gives the local results.

Needs the single-node cluster of .ci/setup_slurm.sh (partition "debug", two fake GPUs);
skipped, saying why, when SLURM is not there. Run as:

    sudo .ci/setup_slurm.sh && .venv/bin/pytest -m slurm tests/slurm -s

Plan: a local run (`--cores 2 --resources gpu=1`) and a SLURM run go at once in two
copies of the workflow. The SLURM run gets one cell sent to a partition that does not
exist, and another cell is scancel'ed while it runs: Snakemake must exit non-zero with
sbatch's and the scheduler's reasons in the log and still finish the other cells. A
second SLURM run then does exactly the two missing cells and the downstream rules.
Finally every measure job must have gone through sbatch, and the cells must match the
local run's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from deploybench.plan.naming import CELL_PATH

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
CI_PROFILE = Path(__file__).resolve().parent / "ci-profile"
WORKFLOW_FILES = ["Snakefile", "config.yaml", "workflow", "scripts", "deploybench"]
WORKFLOW_FILES += ["profiles", "reference"]
PARTITION = "debug"  # made by .ci/setup_slurm.sh, named in ci-profile
MEASURE_RULE = "measure"
RUN_TIMEOUT_S = 15 * 60
CELL_RE = re.compile(r"results/cells/\S+?\.parquet")
# What a cell's row must say alike wherever it ran: its identity and spec, and what follows from shapes alone.
COMPARED = ("cell_id", "status", "spec_json", "context_tokens_measured", "gen_tokens_measured", "active_params")
COMPARED += ("total_params", "kv_cache_bytes", "kv_cache_bytes_analytic")


def cluster_problem() -> str | None:
    """Why the SLURM test cannot run here, or None."""
    for tool in ("sbatch", "sinfo", "squeue", "scancel"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    try:
        sinfo = subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-o", "%t"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "sinfo timed out: is slurmctld running?"
    if sinfo.returncode != 0:
        return f"sinfo failed: {sinfo.stderr.strip()}"
    states = sinfo.stdout.split()
    if not any(s.rstrip("*~#$@").startswith(("idle", "mix", "alloc")) for s in states):
        return f"no usable node in partition {PARTITION!r} (states: {states})"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    why = cluster_problem()
    if why:
        print(f"\nSLURM test skipped: {why} (run .ci/setup_slurm.sh)", file=sys.stderr)
        pytest.skip(f"SLURM cluster not available: {why}")


@pytest.fixture(autouse=True)
def no_leftover_runs():
    yield
    for run in Snakemake.started:  # a failed assertion left it running
        if run.proc.poll() is None:
            run.kill()


class Snakemake:
    """One snakemake process in its own process group, logging to WORKDIR/NAME.log."""

    started: list[Snakemake] = []

    def __init__(self, workdir: Path, name: str, *args: str):
        self.log_path = workdir / f"{name}.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SLURM_") and k not in ("CUDA_VISIBLE_DEVICES", "DEPLOYBENCH_GPU_COUNT")
        }
        env["DEPLOYBENCH_LOCK_DIR"] = str(workdir / ".gpu-locks")
        # This copy's deploybench/ for Snakemake and every job (sbatch passes the environment on).
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(workdir), os.environ.get("PYTHONPATH")) if p)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "snakemake", *args],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a timeout can kill all of it
            )
        self.deadline = time.monotonic() + RUN_TIMEOUT_S
        Snakemake.started.append(self)

    def wait(self) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=max(1, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"snakemake ran over {RUN_TIMEOUT_S} s; log {self.log_path}:\n" + self.log()[-5000:])
        return self.proc.returncode, self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        # SIGTERM first: Snakemake then scancels its jobs. Then make sure.
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        run_id = re.search(r"SLURM run ID: (\S+)", self.log())
        if run_id:
            subprocess.run(["scancel", "--name", run_id[1]], timeout=30, check=False)


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def cell_rows(workdir: Path) -> dict[str, dict]:
    """{cell path: the compared columns of its one row} for every cell Parquet."""
    rows = {}
    for path in sorted((workdir / "results" / "cells").rglob("*.parquet")):
        (row,) = pq.read_table(path, columns=list(COMPARED)).to_pylist()
        rows[str(path.relative_to(workdir))] = row
    return rows


def cell_path_pattern() -> str:
    """naming.CELL_PATH as a regular expression, one group per wildcard (none spans a '/')."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(CELL_PATH):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append(rf"(?P<{field}>[^/]+?)")
    return "".join(parts)


def fail_partition_expression(cell: str) -> str:
    """A slurm_partition resource that sends only `cell` to a partition that does
    not exist. Snakemake evaluates it per job, with the job's wildcards."""
    m = re.fullmatch(cell_path_pattern(), cell)
    assert m, f"cell path {cell} does not follow naming.CELL_PATH ({CELL_PATH})"
    values = sorted(m.groups())
    return f"{MEASURE_RULE}:slurm_partition='nope' if sorted(map(str, wildcards)) == {values} else '{PARTITION}'"


def slurm_measure_jobs(workdir: Path, skip: set[str] = frozenset()) -> dict[str, str]:
    """{SLURM job id: cell} from the SLURM logs kept for the measure jobs (`skip`: ids left out)."""
    jobs = {}
    for log in (workdir / ".snakemake" / "slurm_logs" / f"rule_{MEASURE_RULE}").rglob("*.log"):
        if log.stem in skip:  # cancelled before it wrote its command line
            continue
        cells = set(CELL_RE.findall(log.read_text(errors="replace")))
        assert len(cells) == 1, f"{log} should name exactly one cell: {cells}"
        jobs[log.stem] = cells.pop()
    return jobs


def scancel_first_running_job(run: Snakemake, timeout_s: float = 300) -> str:
    """scancel the first of this run's jobs that SLURM reports RUNNING; return its id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", run.log()))
        queue = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30).stdout
        running = [job for job, state in (line.split() for line in queue.splitlines()) if state == "RUNNING"]
        mine = [job for job in running if job in submitted]
        if mine:
            time.sleep(2)  # mid-run: the job has started writing its log and measuring
            subprocess.run(["scancel", mine[0]], check=True, timeout=30)
            return mine[0]
        time.sleep(0.5)
    pytest.fail("no job of the SLURM run started running in time")


def test_workflow_on_slurm_matches_local_run(slurm_cluster, tmp_path):
    local_dir = copy_workflow(tmp_path / "local")
    slurm_dir = copy_workflow(tmp_path / "slurm")
    slurm_args = ["--profile", "profiles/slurm", "--workflow-profile", str(CI_PROFILE)]

    dry = Snakemake(slurm_dir, "dryrun", "--dry-run", *slurm_args)
    rc, log = dry.wait()
    assert rc == 0, log[-5000:]
    cells = sorted(set(CELL_RE.findall(log)))
    assert len(cells) >= 2, log[-5000:]
    broken = cells[-1]

    # 1. Local reference and the SLURM run with one unsubmittable cell, at once.
    local = Snakemake(local_dir, "local", "--cores", "2", "--resources", "gpu=1")
    slurm = Snakemake(
        slurm_dir,
        "slurm-1",
        *slurm_args,
        "--set-resources",
        fail_partition_expression(broken),
    )
    # The scheduler kills another cell mid-run (scancel, as a time limit or a preemption would).
    cancelled = scancel_first_running_job(slurm)
    rc, log = slurm.wait()
    assert rc != 0, "a cell that SLURM refused must fail the run"
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in log, "the scheduler's reason"
    killed = re.search(rf"SLURM-job '{cancelled}' failed.*?output: (results/cells/\S+?\.parquet)", log, re.S)
    assert killed, "Snakemake must name the cell of the cancelled job"
    killed_cell = killed[1]
    refused = rf"Error in rule {MEASURE_RULE}:.*?invalid partition.*?output: {re.escape(broken)}"
    assert re.search(refused, log, re.S | re.I), "sbatch's reason should be in the log"
    assert set(cell_rows(slurm_dir)) == set(cells) - {broken, killed_cell}, "other cells must finish"
    rc, log = local.wait()
    assert rc == 0, log[-5000:]
    local_rows = cell_rows(local_dir)
    assert sorted(local_rows) == cells

    # 2. The rerun does the two missing cells and everything downstream.
    rc, log = Snakemake(slurm_dir, "slurm-2", *slurm_args).wait()
    assert rc == 0, log[-5000:]
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert len(submitted) == 2, f"only the refused and the cancelled cell should run again: {submitted}"

    # Every measure job went through sbatch: one SLURM job (and kept log) per cell.
    jobs = slurm_measure_jobs(slurm_dir, skip={cancelled})
    assert sorted(jobs.values()) == cells, jobs
    logs = (slurm_dir / "slurm-1.log").read_text() + log
    assert set(re.findall(r"has been submitted with SLURM jobid (\d+)", logs)) == set(jobs) | {cancelled}

    # Inside its SLURM job each cell used the GPU SLURM gave it, and both fake GPUs
    # were busy at some point: GPU jobs are not serialised by a global gpu limit.
    devices = set()
    for cell in cells:
        measure_log = slurm_dir / cell.replace("results/cells/", "logs/measure/")
        text = measure_log.with_suffix(".log").read_text()
        lease = re.search(r"GpuLease\(device_index=(\d+), .*source='slurm'\)", text)
        assert lease, f"{cell}: no SLURM GPU lease in its log"
        devices.add(lease[1])
    assert devices == {"0", "1"}, devices

    # Same cells, same outcome and token counts as the local run.
    assert cell_rows(slurm_dir) == local_rows
    for output in ("results/ape.parquet", "report/report.html"):
        assert (slurm_dir / output).exists(), output
