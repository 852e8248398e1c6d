"""Incremental reruns with real Snakemake: only cells whose settings changed run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from deploybench import HARNESS_VERSION

pytestmark = pytest.mark.workflow


def _changed(before: dict, after: dict) -> set[str]:
    return {path for path, mtime in after.items() if before.get(path) != mtime}


def _complete_run(wf):
    wf.snakemake()
    return wf.cell_files()


def test_first_run_then_nothing_to_do(small_workflow):
    wf = small_workflow
    first = _complete_run(wf)
    assert len(first) == 4
    assert (wf.root / "results/ape.parquet").exists()
    proc = wf.snakemake("-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert wf.cell_files() == first


def test_editing_one_model_reruns_only_its_cells(small_workflow):
    wf = small_workflow
    before = _complete_run(wf)
    config = wf.read_config()
    config["models"]["m-llama"]["attn_implementation"] = "sdpa"
    wf.write_config(config)
    after = _complete_run(wf)
    assert _changed(before, after) == {p for p in before if "/m-llama/" in p}


def test_editing_metadata_reruns_no_cell(small_workflow):
    wf = small_workflow
    before = _complete_run(wf)
    config = wf.read_config()
    config["models"]["m-llama"]["metadata"] = {"license": "Apache-2.0"}
    wf.write_config(config)
    assert _complete_run(wf) == before


def test_adding_a_context_adds_only_its_cells(small_workflow):
    wf = small_workflow
    before = _complete_run(wf)
    config = wf.read_config()
    config["studies"]["main"]["contexts"].append(48)
    wf.write_config(config)
    after = _complete_run(wf)
    assert _changed(before, after) == {
        "results/cells/m-qwen3/eager-bfloat16/c48-g4-b1-greedy.parquet",
        "results/cells/m-llama/eager-bfloat16/c48-g4-b1-greedy.parquet",
    }


def test_editing_an_architecture_card_reruns_only_the_cells_built_from_it(small_workflow):
    wf = small_workflow
    before = _complete_run(wf)
    card = wf.root / "workflow/architectures/tiny-qwen3.json"
    settings = json.loads(card.read_text())
    settings["rms_norm_eps"] = settings["rms_norm_eps"] * 10
    card.write_text(json.dumps(settings, indent=2))
    after = _complete_run(wf)
    uses_card = {p for p in before if "/m-qwen3/" in p}  # only m-qwen3 is built from tiny-qwen3.json
    assert uses_card and _changed(before, after) == uses_card


def test_reordering_yaml_keys_reruns_nothing(small_workflow):
    wf = small_workflow
    before = _complete_run(wf)
    config = wf.read_config()
    reordered = {key: config[key] for key in reversed(list(config))}
    reordered["models"] = {name: dict(reversed(list(m.items()))) for name, m in reversed(config["models"].items())}
    reordered["studies"]["main"]["models"] = list(reversed(config["studies"]["main"]["models"]))
    wf.write_config(reordered)
    proc = wf.snakemake("-n")
    assert "measure" not in proc.stdout.split("Job stats")[-1] if "Job stats" in proc.stdout else True
    assert _complete_run(wf) == before


def test_library_edit_reruns_nothing_until_harness_version_bump(small_workflow):
    wf = small_workflow
    before = _complete_run(wf)
    stats = wf.root / "deploybench/stats.py"
    stats.write_text(stats.read_text() + "\n# an edit that changes no figure\n")
    assert _complete_run(wf) == before
    init = wf.root / "deploybench/__init__.py"
    init.write_text(init.read_text().replace(f'HARNESS_VERSION = "{HARNESS_VERSION}"', 'HARNESS_VERSION = "bumped"'))
    after = _complete_run(wf)
    assert _changed(before, after) == set(before)


def test_sigkill_mid_run_reruns_only_the_killed_cell(small_workflow):
    wf = small_workflow
    config = wf.read_config()
    config["measurement"]["n_runs"] = 40  # long enough to be caught mid-run
    wf.write_config(config)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--resources", "gpu=1"]
    proc = subprocess.Popen(
        cmd, cwd=wf.root, env=wf.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    logs = wf.root / "logs/measure"
    deadline = time.monotonic() + 300
    # Wait until one cell is done and a second one has started, then kill everything.
    while time.monotonic() < deadline:
        done = wf.cell_files()
        started = list(logs.rglob("*.log")) if logs.exists() else []
        if len(done) >= 1 and len(started) >= len(done) + 1:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("no cell finished in time")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    survivors = wf.cell_files()
    killed = {str(p.relative_to(logs)).replace(".log", ".parquet") for p in logs.rglob("*.log")} - {
        p.removeprefix("results/cells/") for p in survivors
    }
    assert killed, "the kill must have caught a cell mid-run"
    wf.snakemake("--unlock")  # Snakemake itself was killed too (as in a power loss): release its lock
    after = _complete_run(wf)
    assert len(after) == 4
    assert {p for p in survivors if after[p] != survivors[p]} == set(), "finished cells must not rerun"
    assert {p.removeprefix("results/cells/") for p in _changed(survivors, after)} >= killed
